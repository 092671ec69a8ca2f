"""One result type for every clusterer of the frozen latent: labels plus one cosine prototype per stratum."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from .features import cluster_directions, l2_normalize, validate_features

__all__ = ["ClusteringResult", "mean_direction_prototypes"]


def mean_direction_prototypes(data: np.ndarray, labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The unit mean direction of each cluster's members, with labels renumbered ``0..k-1`` over non-empty clusters.

    This is the prototype of every clusterer, whatever its own model (centroids, Gaussian components, graph
    partitions): the project assigns an image to the prototype of highest cosine similarity, and the mean direction
    is the point of the unit sphere that maximises the summed cosine similarity to the members
    (:func:`~monai_cae.clustering.features.cluster_directions`). Clusters left empty (a collapsed mixture
    component) have no direction and are dropped.

    Args:
        data: ``(N, D)`` features the clustering was fitted on.
        labels: ``(N,)`` cluster indices.

    Returns:
        ``(prototypes, labels)``: ``(k, D)`` float32 unit rows and ``(N,)`` int64 labels in ``[0, k)``.
    """
    _, labels = np.unique(np.asarray(labels), return_inverse=True)
    return cluster_directions(data, labels, int(labels.max()) + 1), labels.astype(np.int64)


@dataclass
class ClusteringResult:
    """Outcome of :func:`~monai_cae.clustering.cluster_latent`, the same for every method.

    Attributes:
        method: the clusterer's name, as given to ``cluster_latent``.
        labels: ``(N,)`` cluster of each training row, in ``[0, k)``.
        prototypes: ``(k, D)`` unit mean direction of each cluster in the latent space.
        fit_seconds: wall time of the fit, prototypes included.
        normalized: whether rows were L2-normalised before clustering.
        model: the method's fitted model, for inspection: ``KMeans``, ``SphericalKMeans``,
            ``(PCA, GaussianMixture)`` or ``SpectralClustering``.
    """

    method: str
    labels: np.ndarray
    prototypes: np.ndarray
    fit_seconds: float
    normalized: bool
    model: Any = field(default=None, repr=False)

    @property
    def k(self) -> int:
        """Number of strata (non-empty clusters)."""
        return int(self.prototypes.shape[0])

    def similarities(self, features: np.ndarray) -> np.ndarray:
        """``(N, k)`` cosine similarity of each row to each prototype: what the soft assignment is built from."""
        return l2_normalize(validate_features(features)) @ self.prototypes.T

    def predict(self, features: np.ndarray) -> np.ndarray:
        """Stratum of each row: its most cosine-similar prototype."""
        return np.argmax(self.similarities(features), axis=1)

    def to_dict(self) -> dict:
        return {"method": self.method, "k": self.k, "fit_seconds": self.fit_seconds, "normalized": self.normalized,
                "sizes": np.bincount(self.labels, minlength=self.k).tolist()}
