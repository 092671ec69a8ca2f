"""Spherical KMeans: KMeans on the unit sphere, with cosine similarity in place of Euclidean distance."""

from __future__ import annotations

import numpy as np
from sklearn.cluster import kmeans_plusplus

from .features import cluster_directions, l2_normalize, validate_features, validate_k

__all__ = ["SphericalKMeans"]


class SphericalKMeans:
    """KMeans whose centres are unit vectors and whose assignments maximise cosine similarity.

    scikit-learn has no spherical KMeans. Euclidean KMeans on L2-normalised rows (what the elbow fit does) is close,
    but its centres are not unit vectors, so its Voronoi cells are not those of the cosine similarity the project
    assigns images with. Here every centre is the mean direction of its members and every row goes to its most
    cosine-similar centre, which increases the summed cosine similarity at each step (Dhillon and Modha 2001;
    Banerjee et al. 2005, "Clustering on the unit hypersphere using von Mises-Fisher distributions", JMLR 6).

    Args:
        n_clusters: number of clusters ``k``.
        n_init: restarts from k-means++ seeds; the run with the highest summed similarity is kept.
        max_iter: iterations per restart.
        seed: random state of the seeding.

    Attributes:
        cluster_centers_: ``(k, D)`` unit centres after :meth:`fit`.
        labels_: ``(N,)`` cluster of each training row.
        objective_: summed cosine similarity of the rows to their centres (higher is better).
        n_iter_: iterations of the kept run.
    """

    def __init__(self, n_clusters: int, n_init: int = 10, max_iter: int = 300, seed: int = 0) -> None:
        if n_init < 1 or max_iter < 1:
            raise ValueError(f"n_init and max_iter must be at least 1, got n_init={n_init}, max_iter={max_iter}.")
        self.n_clusters, self.n_init, self.max_iter, self.seed = n_clusters, n_init, max_iter, seed

    def fit(self, features: np.ndarray) -> SphericalKMeans:
        """Cluster the directions of the rows of ``features`` (their norms are ignored).

        Raises:
            ValueError: for a non-2-D matrix or ``n_clusters`` outside ``[2, N - 1]``.
        """
        data = l2_normalize(validate_features(features))
        k = validate_k(self.n_clusters, len(data))
        rng = np.random.default_rng(self.seed)
        best = None
        for _ in range(self.n_init):
            # on unit vectors ||x - c||^2 = 2 - 2 cos(x, c), so Euclidean k-means++ seeding is cosine seeding
            centres, _ = kmeans_plusplus(data, k, random_state=int(rng.integers(2**31 - 1)))
            run = self._lloyd(data, l2_normalize(centres))
            if best is None or run[2] > best[2]:
                best = run
        self.cluster_centers_, self.labels_, self.objective_, self.n_iter_ = best
        return self

    def _lloyd(self, data: np.ndarray, centres: np.ndarray) -> tuple[np.ndarray, np.ndarray, float, int]:
        labels = np.full(len(data), -1)
        for iteration in range(1, self.max_iter + 1):
            similarities = data @ centres.T
            new_labels = np.argmax(similarities, axis=1)
            if np.array_equal(new_labels, labels):
                break
            labels = new_labels
            empty = np.flatnonzero(np.bincount(labels, minlength=len(centres)) == 0)
            if len(empty):  # reseed an empty cluster at the rows their centres fit worst, as sklearn's KMeans does
                labels[np.argsort(similarities[np.arange(len(data)), labels])[: len(empty)]] = empty
            centres = cluster_directions(data, labels, len(centres))
        objective = float((data * centres[labels]).sum())
        return centres, labels, objective, iteration

    def predict(self, features: np.ndarray) -> np.ndarray:
        """Most cosine-similar centre of each row."""
        # a row's norm scales all its similarities alike, so the argmax needs no normalisation
        return np.argmax(validate_features(features) @ self.cluster_centers_.T, axis=1)
