"""Gaussian mixtures on PCA-whitened features, shared by the GMM clusterer and the BIC choice of k."""

from __future__ import annotations

import numpy as np
from sklearn.decomposition import PCA
from sklearn.mixture import GaussianMixture

__all__ = ["fit_gaussian_mixture", "whiten"]


def whiten(data: np.ndarray, components: int = 32, seed: int = 0) -> tuple[PCA, np.ndarray]:
    """Project the rows on their leading principal axes, each scaled to unit variance.

    A full-covariance mixture has ``k * d * (d + 3) / 2`` parameters in ``d`` dimensions: on a 128-D latent that is
    over 8,000 per component, more than a stratum of a few hundred images can estimate, and BIC (which charges
    ``log N`` per parameter) then favours too few clusters. Keeping the leading axes, the linear counterpart of
    N2D's manifold step (McConville et al. 2020), bounds that count; scaling them to unit variance makes the
    mixture's covariance floor ``reg_covar`` and its KMeans initialisation treat every kept axis alike.

    Args:
        data: ``(N, D)`` features (already L2-normalised when the latent is compared by cosine).
        components: axes to keep, capped at ``min(N - 1, D)``.
        seed: random state of the (randomised, for large inputs) PCA solver.

    Returns:
        ``(pca, whitened)``: the fitted ``PCA`` and the ``(N, d)`` whitened rows.

    Raises:
        ValueError: for ``components`` below 1.
    """
    if components < 1:
        raise ValueError(f"components must be at least 1, got {components}.")
    pca = PCA(n_components=min(components, data.shape[1], len(data) - 1), whiten=True, random_state=seed)
    return pca, pca.fit_transform(data)


def fit_gaussian_mixture(
    whitened: np.ndarray, k: int, seed: int = 0, covariance_type: str = "full", n_init: int = 1
) -> GaussianMixture:
    """Fit a ``k``-component Gaussian mixture by EM from a KMeans initialisation.

    Unlike KMeans, each component has its own covariance and weight, so elongated, unequally spread and unequally
    sized clusters are modelled rather than cut by equal-radius Voronoi cells.

    Args:
        whitened: ``(N, d)`` rows from :func:`whiten`.
        k: number of components.
        seed: random state of the initialisation.
        covariance_type: ``"full"``, ``"tied"``, ``"diag"`` or ``"spherical"`` (scikit-learn's).
        n_init: EM restarts; the one with the highest likelihood is kept.

    Returns:
        The fitted ``GaussianMixture``.
    """
    return GaussianMixture(k, covariance_type=covariance_type, n_init=n_init, random_state=seed).fit(whitened)
