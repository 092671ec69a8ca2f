"""The "stat" evaluation: map each cluster to the most frequent true label among its members."""

from __future__ import annotations

import numpy as np

__all__ = ["ClusterLabelMapping"]


class ClusterLabelMapping:
    """Cluster-to-label map fitted on a labelled subset (Ferrante et al. 2022, evaluation (a)).

    "The distribution of real labels across each cluster label is computed, and each cluster label is associated
    with the most frequent real label." Ties go to the lowest label. A cluster with no labelled member (possible
    when the labelled subset is small) maps to the overall most frequent label.

    Args:
        num_clusters: number of clusters ``K``.
    """

    def __init__(self, num_clusters: int) -> None:
        if num_clusters < 1:
            raise ValueError(f"num_clusters must be positive, got {num_clusters}.")
        self.num_clusters = num_clusters
        self.mapping = np.zeros(num_clusters, dtype=np.int64)
        self.counts = np.zeros((num_clusters, 0), dtype=np.int64)

    def fit(self, clusters: np.ndarray, labels: np.ndarray) -> ClusterLabelMapping:
        """Fit the map.

        Args:
            clusters: ``(N,)`` cluster index of each labelled sample, in ``[0, K)``.
            labels: ``(N,)`` non-negative integer labels.

        Returns:
            This mapping.

        Raises:
            ValueError: for mismatched lengths, out-of-range clusters or negative labels.
        """
        clusters, labels = np.asarray(clusters).reshape(-1), np.asarray(labels).reshape(-1)
        if len(clusters) != len(labels) or len(labels) == 0:
            raise ValueError(f"need matching, non-empty clusters and labels, got {len(clusters)} and {len(labels)}.")
        if clusters.min() < 0 or clusters.max() >= self.num_clusters or labels.min() < 0:
            raise ValueError(f"clusters must be in [0, {self.num_clusters}) and labels non-negative.")
        self.counts = np.zeros((self.num_clusters, int(labels.max()) + 1), dtype=np.int64)
        np.add.at(self.counts, (clusters, labels), 1)
        majority = int(np.bincount(labels).argmax())
        self.mapping = np.where(self.counts.sum(1) > 0, self.counts.argmax(1), majority)
        return self

    def predict(self, clusters: np.ndarray) -> np.ndarray:
        """Labels predicted for cluster indices."""
        return self.mapping[np.asarray(clusters).reshape(-1)]

    def scores(self, soft_assignment: np.ndarray) -> np.ndarray:
        """Class scores from a soft cluster assignment: the assignment mass each class receives through the map.

        Args:
            soft_assignment: ``(N, K)`` probabilities over clusters.

        Returns:
            ``(N, C)`` class scores summing to one per row, usable for an AUC.
        """
        num_classes = self.counts.shape[1]
        return np.asarray(soft_assignment) @ np.eye(num_classes)[self.mapping]
