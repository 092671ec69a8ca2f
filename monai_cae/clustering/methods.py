"""Clusterers of the frozen latent behind one entry point, :func:`cluster_latent`, chosen by name."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import numpy as np
from sklearn.cluster import KMeans, SpectralClustering

from .features import l2_normalize, validate_features, validate_k
from .gmm import fit_gaussian_mixture, pca_project
from .result import ClusteringResult, mean_direction_prototypes
from .spherical import SphericalKMeans

__all__ = ["CLUSTERING_METHODS", "cluster_latent"]

# each takes the (N, D) rows to cluster, k and a seed (plus its own options) and returns (labels, fitted model)
Clusterer = Callable[..., tuple[np.ndarray, Any]]


def _kmeans(data: np.ndarray, k: int, seed: int, n_init: int = 10) -> tuple[np.ndarray, KMeans]:
    model = KMeans(n_clusters=k, n_init=n_init, random_state=seed).fit(data)
    return model.labels_, model


def _spherical_kmeans(
    data: np.ndarray, k: int, seed: int, n_init: int = 10, max_iter: int = 300
) -> tuple[np.ndarray, SphericalKMeans]:
    model = SphericalKMeans(k, n_init=n_init, max_iter=max_iter, seed=seed).fit(data)
    return model.labels_, model


def _gmm(
    data: np.ndarray, k: int, seed: int, pca_components: int = 16, covariance_type: str = "full", n_init: int = 3
) -> tuple[np.ndarray, tuple]:
    pca, projected = pca_project(data, pca_components, seed)
    mixture = fit_gaussian_mixture(projected, k, seed, covariance_type, n_init)
    return mixture.predict(projected), (pca, mixture)


def _spectral(data: np.ndarray, k: int, seed: int, n_neighbors: int = 10) -> tuple[np.ndarray, SpectralClustering]:
    # a sparse symmetric kNN graph: the clusters are its weakly connected parts, whatever their shape (von Luxburg
    # 2007); cluster_qr reads the partition off the eigenvectors without a second, seed-dependent KMeans
    model = SpectralClustering(n_clusters=k, affinity="nearest_neighbors", n_neighbors=n_neighbors,
                               assign_labels="cluster_qr", random_state=seed).fit(data)
    return model.labels_, model


CLUSTERING_METHODS: dict[str, Clusterer] = {
    "kmeans": _kmeans,
    "spherical_kmeans": _spherical_kmeans,
    "gmm": _gmm,
    "spectral": _spectral,
}


def cluster_latent(
    features: np.ndarray, method: str = "kmeans", k: int = 10, seed: int = 0, normalize: bool = True, **options: Any
) -> ClusteringResult:
    """Cluster latent vectors with the named method and return one cosine prototype per cluster.

    Methods:
        - ``"kmeans"``: scikit-learn KMeans, the clusterer of the published pipeline (Ferrante et al. 2022).
          Options: ``n_init`` (10).
        - ``"spherical_kmeans"``: :class:`~monai_cae.clustering.spherical.SphericalKMeans`, centres on the unit
          sphere and cosine assignments (Banerjee et al. 2005). Options: ``n_init`` (10), ``max_iter`` (300).
        - ``"gmm"``: full-covariance Gaussian mixture on the leading principal axes
          (:func:`~monai_cae.clustering.gmm.pca_project`), which fits elongated and unequal clusters. Options:
          ``pca_components`` (16), ``covariance_type`` (``"full"``), ``n_init`` (3).
        - ``"spectral"``: spectral clustering of the symmetric k-nearest-neighbour graph (von Luxburg 2007,
          "A tutorial on spectral clustering"), which follows non-convex clusters. Options: ``n_neighbors`` (10).
          Its cost grows faster than linearly with N (an eigenproblem of the N-node graph).

    Whatever the method, the prototypes are the unit mean directions of the clusters' members
    (:func:`~monai_cae.clustering.result.mean_direction_prototypes`), so the strata keep the project's contract:
    an image's soft assignment is a softmax of its cosine similarities to ``k`` vectors. That contract can only
    represent clusters that are separated in direction: a method may find clusters (concentric rings, say) whose
    prototypes then coincide.

    Args:
        features: ``(N, D)`` latent vectors.
        method: a key of :data:`CLUSTERING_METHODS`.
        k: number of clusters, in ``[2, N - 1]``.
        seed: random state of the method.
        normalize: L2-normalise rows first, so that only their direction, which cosine assignment sees, counts.
        **options: the method's own options, listed above.

    Returns:
        A :class:`~monai_cae.clustering.result.ClusteringResult`; its ``k`` can be below the requested one when a
        method leaves a cluster empty.

    Raises:
        ValueError: for an unknown method, a ``k`` outside ``[2, N - 1]`` or a non-2-D feature matrix.
        TypeError: for an option the method does not take.
    """
    if method not in CLUSTERING_METHODS:
        raise ValueError(f"Unknown clustering method {method!r}; choose one of {sorted(CLUSTERING_METHODS)}.")
    features = validate_features(features)
    k = validate_k(k, len(features))
    start = time.perf_counter()
    data = l2_normalize(features) if normalize else features
    labels, model = CLUSTERING_METHODS[method](data, k, seed, **options)
    prototypes, labels = mean_direction_prototypes(data, labels)
    return ClusteringResult(method, labels, prototypes, time.perf_counter() - start, normalize, model)
