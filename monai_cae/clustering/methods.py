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
from .scan import fit_scan_head
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


def _umap_gmm(
    data: np.ndarray, k: int, seed: int, n_neighbors: int = 20, n_components: int | None = None, n_init: int = 3,
    metric: str = "cosine",
) -> tuple[np.ndarray, tuple]:
    import umap  # umap-learn compiles its kernels with numba when imported, several seconds: only when chosen

    # N2D (McConville et al. 2020): UMAP with min_dist=0 packs each manifold tightly, to as many axes as clusters
    reducer = umap.UMAP(n_neighbors=n_neighbors, n_components=n_components or k, min_dist=0.0, metric=metric,
                        random_state=seed, n_jobs=1)
    embedded = reducer.fit_transform(data)
    mixture = fit_gaussian_mixture(embedded, k, seed, "full", n_init)
    return mixture.predict(embedded), (reducer, mixture)


CLUSTERING_METHODS: dict[str, Clusterer] = {
    "kmeans": _kmeans,
    "spherical_kmeans": _spherical_kmeans,
    "gmm": _gmm,
    "spectral": _spectral,
    "umap_gmm": _umap_gmm,
    "scan": fit_scan_head,
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
        - ``"umap_gmm"``: N2D (McConville et al. 2020, "N2D: (Not Too) Deep Clustering via Clustering the Local
          Manifold of an Autoencoded Embedding"): UMAP of the kNN graph to ``k`` axes with ``min_dist=0``, then a
          full-covariance Gaussian mixture. Options: ``n_neighbors`` (20), ``n_components`` (``k``), ``n_init``
          (3), ``metric`` (``"cosine"``, UMAP's). Needs ``umap-learn`` (the ``cluster`` extra).
        - ``"scan"``: a clustering head trained on the frozen latent with nearest-neighbour consistency and an
          entropy term, then self-labelling on confident rows (:func:`~monai_cae.clustering.scan.fit_scan_head`,
          Van Gansbeke et al. 2020). Options: those of ``fit_scan_head``.

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
