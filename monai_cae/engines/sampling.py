"""Sampling new latents from a stratum, for decoding with the conditional decoder."""

from __future__ import annotations

import numpy as np
import torch

__all__ = ["ClusterGaussianSampler"]


class ClusterGaussianSampler:
    """One multivariate Gaussian per cluster, fitted on the latents assigned to it.

    Ferrante et al. 2022 note that the autoencoder allows "sampling from a specific cluster". Fitting a Gaussian to
    the latents of each stratum and decoding its samples with the conditional decoder (conditioned on the stratum)
    gives new images of that stratum, usable for data augmentation. The covariance is shrunk towards its diagonal by
    ``shrinkage`` so that it stays positive definite for small clusters.

    Args:
        shrinkage: weight of the diagonal in the covariance estimate, in [0, 1].

    Raises:
        ValueError: for ``shrinkage`` outside [0, 1].
    """

    def __init__(self, shrinkage: float = 0.1) -> None:
        if not 0.0 <= shrinkage <= 1.0:
            raise ValueError(f"shrinkage must be in [0, 1], got {shrinkage}.")
        self.shrinkage = shrinkage
        self.means: dict[int, np.ndarray] = {}
        self.covariances: dict[int, np.ndarray] = {}

    def fit(self, latents: np.ndarray, clusters: np.ndarray) -> ClusterGaussianSampler:
        """Fit the per-cluster Gaussians.

        Args:
            latents: ``(N, D)`` latents.
            clusters: ``(N,)`` cluster index of each latent.

        Returns:
            This sampler.

        Raises:
            ValueError: for mismatched shapes or a cluster with fewer than two members.
        """
        latents = np.asarray(latents, dtype=np.float64)
        clusters = np.asarray(clusters).reshape(-1)
        if latents.ndim != 2 or len(latents) != len(clusters):
            raise ValueError(f"latents must be (N, D) with N={len(clusters)} cluster labels, got {latents.shape}.")
        for cluster in np.unique(clusters):
            members = latents[clusters == cluster]
            if len(members) < 2:
                raise ValueError(f"cluster {cluster} has {len(members)} member(s); at least 2 are needed.")
            covariance = np.cov(members, rowvar=False)
            covariance = (1 - self.shrinkage) * covariance + self.shrinkage * np.diag(np.diag(covariance))
            self.means[int(cluster)] = members.mean(0)
            self.covariances[int(cluster)] = covariance + 1e-6 * np.eye(latents.shape[1])
        return self

    def sample(self, cluster: int, n: int, seed: int | None = None) -> torch.Tensor:
        """Draw latents from one cluster's Gaussian.

        Args:
            cluster: cluster index.
            n: number of samples.
            seed: random seed.

        Returns:
            ``(n, D)`` float32 latents.

        Raises:
            KeyError: for a cluster that was not fitted.
        """
        if cluster not in self.means:
            raise KeyError(f"cluster {cluster} was not fitted; known clusters: {sorted(self.means)}.")
        rng = np.random.default_rng(seed)
        draws = rng.multivariate_normal(self.means[cluster], self.covariances[cluster], size=n, method="cholesky")
        return torch.from_numpy(draws.astype(np.float32))
