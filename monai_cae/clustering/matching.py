"""Agreement of two labelings under the best one-to-one matching of their labels."""

from __future__ import annotations

import numpy as np
from scipy.optimize import linear_sum_assignment

__all__ = ["hungarian_accuracy"]


def hungarian_accuracy(labels: np.ndarray, clusters: np.ndarray) -> float:
    """Accuracy under the best one-to-one matching of clusters to labels (unmatched clusters count as errors).

    Args:
        labels: ``(N,)`` true labels.
        clusters: ``(N,)`` cluster indices.

    Returns:
        The matched accuracy in [0, 1].
    """
    labels, clusters = np.asarray(labels).reshape(-1), np.asarray(clusters).reshape(-1)
    label_values, label_index = np.unique(labels, return_inverse=True)
    cluster_values, cluster_index = np.unique(clusters, return_inverse=True)
    contingency = np.zeros((len(cluster_values), len(label_values)), dtype=np.int64)
    np.add.at(contingency, (cluster_index, label_index), 1)
    rows, columns = linear_sum_assignment(-contingency)
    return float(contingency[rows, columns].sum() / len(labels))
