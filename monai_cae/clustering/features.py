"""Latent feature matrices: row normalisation and the argument checks every clusterer and criterion shares."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from scipy import sparse

__all__ = ["cluster_directions", "l2_normalize", "validate_features", "validate_k", "validate_k_values"]


def l2_normalize(features: np.ndarray) -> np.ndarray:
    """Rows scaled to unit Euclidean norm (zero rows stay zero)."""
    norms = np.linalg.norm(features, axis=1, keepdims=True)
    return features / np.maximum(norms, 1e-12)


def cluster_directions(data: np.ndarray, labels: np.ndarray, k: int) -> np.ndarray:
    """``(k, D)`` unit direction of each cluster's summed rows; a cluster without members gets a zero row.

    On the unit sphere this is the point of highest summed cosine similarity to the members (Banerjee et al. 2005,
    Sec. 2.2). The sums are one sparse ``(k, N)`` membership product: ``np.add.at`` is an order of magnitude slower.
    """
    membership = sparse.csr_matrix((np.ones(len(labels)), (labels, np.arange(len(labels)))), shape=(k, len(labels)))
    return l2_normalize(np.asarray(membership @ data.astype(np.float64))).astype(np.float32)


def validate_features(features: np.ndarray) -> np.ndarray:
    """The features as a ``float32`` ``(N, D)`` array.

    Raises:
        ValueError: for any other shape, or an empty matrix.
    """
    features = np.asarray(features, dtype=np.float32)
    if features.ndim != 2 or features.shape[0] == 0 or features.shape[1] == 0:
        raise ValueError(f"features must be a non-empty (N, D) matrix, got shape {features.shape}.")
    return features


def validate_k(k: int, n_samples: int) -> int:
    """``k`` as an ``int`` in ``[2, N - 1]``: one cluster says nothing and ``N`` clusters are one image each.

    Raises:
        ValueError: naming ``k`` and ``N`` when it is not such an integer.
    """
    if not isinstance(k, (int, np.integer)) or isinstance(k, bool) or not 2 <= k < n_samples:
        raise ValueError(f"k must be an integer in [2, N - 1] with N={n_samples}, got k={k!r}.")
    return int(k)


def validate_k_values(k_values: Sequence[int], n_samples: int) -> list[int]:
    """The cluster counts of a sweep, sorted: at least two, each in ``[2, N - 1]``.

    Raises:
        ValueError: naming the counts and ``N`` otherwise.
    """
    k_values = sorted(int(k) for k in k_values)
    if len(k_values) < 2 or k_values[0] < 2 or k_values[-1] >= n_samples:
        raise ValueError(f"k_values must hold at least two counts in [2, N - 1] with N={n_samples}, got {k_values}.")
    return k_values
