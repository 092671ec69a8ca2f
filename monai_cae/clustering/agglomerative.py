"""Pseudo-classes by Ward agglomerative clustering, with a subsample above a size (for cluster-aware negatives)."""

from __future__ import annotations

import numpy as np
from sklearn.cluster import AgglomerativeClustering

__all__ = ["agglomerative_pseudo_classes"]


def agglomerative_pseudo_classes(
    features: np.ndarray, n_clusters: int, max_fit_samples: int = 5000, seed: int = 0
) -> np.ndarray:
    """Pseudo-classes by Ward agglomerative clustering of L2-normalised features.

    Ward linkage needs the pairwise distances of the points it clusters (scikit-learn goes through SciPy's
    condensed distance matrix), ``O(N^2)`` memory and time. Beyond ``max_fit_samples`` points the tree is built on a
    random subsample of that size, and every other point joins the cluster with the nearest centroid (the clusters'
    means, in the normalised space), which keeps the cost at ``O(max_fit_samples^2 + N k)``.

    Args:
        features: ``(N, D)`` features.
        n_clusters: number of pseudo-classes.
        max_fit_samples: the most points the tree is built on.
        seed: seed of the subsample.

    Returns:
        ``(N,)`` int64 pseudo-classes in ``[0, n_clusters)``.

    Raises:
        ValueError: for features that are not a 2D matrix, ``n_clusters`` below 2 or above the number of points
            clustered, or ``max_fit_samples`` below 2.
    """
    features = np.asarray(features, dtype=np.float64)
    if features.ndim != 2:
        raise ValueError(f"features must be an (N, D) matrix, got shape {features.shape}.")
    if max_fit_samples < 2:
        raise ValueError(f"max_fit_samples must be at least 2, got {max_fit_samples}.")
    fitted = min(len(features), max_fit_samples)
    if not 2 <= n_clusters <= fitted:
        raise ValueError(f"n_clusters must be in [2, {fitted}] for {len(features)} points, got {n_clusters}.")
    unit = features / np.maximum(np.linalg.norm(features, axis=1, keepdims=True), 1e-12)
    ward = AgglomerativeClustering(n_clusters=n_clusters, linkage="ward")
    if len(unit) <= max_fit_samples:
        return ward.fit_predict(unit).astype(np.int64)
    subset = np.sort(np.random.default_rng(seed).choice(len(unit), max_fit_samples, replace=False))
    subset_labels = ward.fit_predict(unit[subset])
    centroids = np.stack([unit[subset][subset_labels == c].mean(axis=0) for c in range(n_clusters)])
    # nearest centroid by squared distance; |x|^2 is the same for every centroid, so it is left out
    labels = np.argmin((centroids**2).sum(axis=1)[None, :] - 2.0 * unit @ centroids.T, axis=1)
    labels[subset] = subset_labels
    return labels.astype(np.int64)
