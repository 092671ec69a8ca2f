"""Sampling new latents from a stratum, for decoding with the conditional decoder."""

from __future__ import annotations

import os
from collections.abc import Iterable

import numpy as np
import torch
from PIL import Image

from .embedding import embed_dataset

__all__ = ["ClusterGaussianSampler", "generate_stratum_images"]


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


@torch.no_grad()
def generate_stratum_images(
    network: torch.nn.Module,
    data_loader: Iterable[dict],
    stratum: int,
    num_samples: int,
    output_dir: str,
    device: torch.device | str = "cpu",
    seed: int = 0,
    progress: bool = True,
) -> list[str]:
    """Sample new images of one stratum: fit per-stratum Gaussians on the training latents and decode samples.

    The latents of ``data_loader`` are assigned to their nearest prototype, a :class:`ClusterGaussianSampler` is
    fitted, ``num_samples`` latents are drawn from the chosen stratum and decoded by the conditional decoder with a
    one-hot assignment to that stratum. Each image is written as ``sample_XXXX.png`` plus a ``montage.png`` (tiles
    enlarged to about 128 pixels so small images can be inspected).

    Args:
        network: trained :class:`~monai_cae.networks.nets.ContrastiveAutoEncoder` with prototypes.
        data_loader: loader over the training set (no augmentation).
        stratum: index of the stratum, in ``[0, K)``.
        num_samples: number of images to write.
        output_dir: destination folder.
        device: device to run on.
        seed: sampling seed.
        progress: show a progress bar while embedding.

    Returns:
        Paths of the written sample images.

    Raises:
        ValueError: for a stratum outside ``[0, K)`` or a non-positive ``num_samples``.
    """
    num_prototypes = network.num_prototypes
    if not 0 <= stratum < num_prototypes:
        raise ValueError(f"stratum must be in [0, {num_prototypes}), got {stratum}.")
    if num_samples < 1:
        raise ValueError(f"num_samples must be positive, got {num_samples}.")
    network.eval()
    latents, _ = embed_dataset(network.encode, data_loader, device, label_key=None, progress=progress)
    _, similarities = network.assign(torch.from_numpy(latents).to(device))
    sampler = ClusterGaussianSampler().fit(latents, similarities.argmax(1).cpu().numpy())
    h = sampler.sample(stratum, num_samples, seed=seed).to(device)
    one_hot = torch.nn.functional.one_hot(torch.full((num_samples,), stratum), num_prototypes).float().to(device)
    images = network.decode_conditional(h, one_hot).clamp(0, 1).cpu().numpy()
    os.makedirs(output_dir, exist_ok=True)
    paths = []
    for i, image in enumerate(images):
        path = os.path.join(output_dir, f"sample_{i:04d}.png")
        Image.fromarray((image[0] * 255).round().astype(np.uint8)).save(path)
        paths.append(path)
    columns = min(num_samples, 8)
    rows = -(-num_samples // columns)
    height, width = images.shape[-2:]
    montage = np.zeros((rows * height, columns * width), dtype=np.uint8)
    for i, image in enumerate(images):
        r, c = divmod(i, columns)
        montage[r * height : (r + 1) * height, c * width : (c + 1) * width] = (image[0] * 255).round()
    montage_image = Image.fromarray(montage)
    zoom = max(1, 128 // max(height, width))  # 28-pixel tiles are too small to look at unscaled
    montage_image.resize((montage.shape[1] * zoom, montage.shape[0] * zoom), Image.NEAREST).save(
        os.path.join(output_dir, "montage.png")
    )
    return paths
