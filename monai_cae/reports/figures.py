"""Pictures for the cohort report: decoded prototypes, thumbnails and the 2D map of the latent space, as PNG."""

from __future__ import annotations

import base64
import io

import numpy as np
import torch

from monai_cae.networks.nets import ContrastiveAutoEncoder

__all__ = [
    "data_uri",
    "decode_prototypes",
    "image_png",
    "latent_map_png",
    "latent_map_sample",
    "mean_norm_per_stratum",
    "stratum_latent_norms",
]


def image_png(image: np.ndarray | torch.Tensor, scale: int = 1) -> bytes:
    """Encode a grey image in [0, 1] (values outside are clipped) as PNG.

    Args:
        image: ``(H, W)`` or ``(1, H, W)`` image.
        scale: integer upscaling (nearest), so that 28-pixel images are visible in a page.

    Returns:
        PNG bytes.

    Raises:
        ValueError: for a scale below 1 or an image that is not 2D grey.
    """
    from PIL import Image

    if scale < 1:
        raise ValueError(f"scale must be a positive integer, got {scale}.")
    array = np.asarray(torch.as_tensor(image).detach().cpu().float())
    array = array[0] if array.ndim == 3 and array.shape[0] == 1 else array
    if array.ndim != 2:
        raise ValueError(f"expected a (H, W) or (1, H, W) grey image, got shape {array.shape}.")
    pixels = (np.clip(np.nan_to_num(array), 0.0, 1.0) * 255).round().astype(np.uint8)
    picture = Image.fromarray(pixels)
    if scale > 1:
        picture = picture.resize((pixels.shape[1] * scale, pixels.shape[0] * scale), Image.NEAREST)
    buffer = io.BytesIO()
    picture.save(buffer, format="PNG", optimize=True)
    return buffer.getvalue()


def data_uri(png: bytes) -> str:
    """A ``data:image/png;base64,...`` URI, so that a page needs no other file."""
    return "data:image/png;base64," + base64.b64encode(png).decode("ascii")


def stratum_latent_norms(embeddings: np.ndarray, strata: np.ndarray, k: int) -> np.ndarray:
    """Mean latent norm of each stratum's images, the norm :func:`decode_prototypes` gives each prototype.

    Args:
        embeddings: ``(N, D)`` latents.
        strata: ``(N,)`` stratum of each image.
        k: number of strata.

    Returns:
        ``(K,)`` norms; an empty stratum gets the mean over all images (1 without images).
    """
    return mean_norm_per_stratum(np.linalg.norm(np.asarray(embeddings, dtype=np.float64), axis=1), strata, k)


def mean_norm_per_stratum(norms: np.ndarray, strata: np.ndarray, k: int) -> np.ndarray:
    """:func:`stratum_latent_norms` from the latents' norms, which a caller streaming the latents computes a part at
    a time.

    Args:
        norms: ``(N,)`` float64 latent norms.
        strata: ``(N,)`` stratum of each image.
        k: number of strata.

    Returns:
        ``(K,)`` norms; an empty stratum gets the mean over all images (1 without images).
    """
    strata = np.asarray(strata)
    typical = float(norms.mean()) if len(norms) else 1.0
    return np.array([float(norms[strata == j].mean()) if (strata == j).any() else typical for j in range(k)])


@torch.no_grad()
def decode_prototypes(
    network: ContrastiveAutoEncoder, device: torch.device | str = "cpu", latent_norms: np.ndarray | float | None = None
) -> np.ndarray:
    """Decode every prototype as an image: the conditional decoder fed ``h = P_k`` and a one-hot assignment to ``k``.

    Prototypes are KMeans centroids of L2-normalised latents, so they are directions of norm about 1 while images
    have latents of norm ``||h||`` (about 13 for the default model); decoded as they are, they look like an empty
    latent. ``latent_norms`` rescales each prototype to the typical norm of its stratum's latents first.

    Args:
        network: trained network with prototypes.
        device: device of the network.
        latent_norms: norm to give each prototype (one per stratum, or one for all); ``None`` keeps them as stored.

    Returns:
        ``(K, H, W)`` float32 images (the decoder's raw output; the training targets are in [0, 1]).
    """
    network.eval()
    prototypes = network.prototypes.to(device)
    if latent_norms is not None:
        norms = torch.as_tensor(np.broadcast_to(latent_norms, (len(prototypes),)).copy(), dtype=prototypes.dtype)
        prototypes = prototypes / prototypes.norm(dim=1, keepdim=True).clamp_min(1e-12) * norms.to(device)[:, None]
    one_hot = torch.eye(len(prototypes), device=device, dtype=prototypes.dtype)
    return network.decode_conditional(prototypes, one_hot)[:, 0].float().cpu().numpy()


def latent_map_sample(n: int, max_points: int = 20000, seed: int = 0) -> np.ndarray:
    """Sorted positions of the images :func:`latent_map_png` draws among ``n``: all, or a fixed random subset of
    ``max_points``."""
    return np.sort(np.random.default_rng(seed).choice(n, max_points, replace=False)) if n > max_points else np.arange(n)


def latent_map_png(
    embeddings: np.ndarray,
    strata: np.ndarray,
    prototypes: np.ndarray,
    outliers: np.ndarray | None = None,
    max_points: int = 20000,
    seed: int = 0,
) -> bytes:
    """Scatter plot of the cohort's L2-normalised latents projected on their first two principal components.

    Args:
        embeddings: ``(N, D)`` latents.
        strata: ``(N,)`` stratum of each image (the colour).
        prototypes: ``(K, D)`` prototypes, drawn as numbered stars in the same projection.
        outliers: optional ``(N,)`` flags, drawn as black crosses.
        max_points: at most this many points are fitted and drawn (a fixed random subset), so that the figure
            stays light and its memory bounded.
        seed: seed of that subset.

    Returns:
        PNG bytes.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from sklearn.decomposition import PCA

    # the strata are cosine-based, so the map shows directions: latents and prototypes are L2-normalised
    unit = lambda x: x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)  # noqa: E731
    n = len(embeddings)
    keep = latent_map_sample(n, max_points, seed)
    drawn, prototypes = unit(np.asarray(embeddings[keep], np.float64)), unit(np.asarray(prototypes, np.float64))
    pca = PCA(n_components=2, random_state=seed).fit(drawn if n >= 2 else np.vstack([drawn, prototypes]))
    points, centres = pca.transform(drawn), pca.transform(prototypes)
    colours = plt.get_cmap("tab10")
    figure, axes = plt.subplots(figsize=(6.4, 5.2), dpi=100)
    for k in range(len(prototypes)):
        mine = strata[keep] == k
        axes.scatter(points[mine, 0], points[mine, 1], s=8, alpha=0.6, color=colours(k % 10), label=f"stratum {k}")
        axes.scatter(*centres[k], marker="*", s=320, color=colours(k % 10), edgecolors="black", linewidths=1.0)
        axes.annotate(str(k), centres[k], xytext=(6, 6), textcoords="offset points", fontweight="bold")
    if outliers is not None and outliers[keep].any():
        flagged = outliers[keep].astype(bool)
        axes.scatter(points[flagged, 0], points[flagged, 1], s=24, marker="x", color="black", label="outlier")
    ratio = pca.explained_variance_ratio_
    axes.set_xlabel(f"PC 1 ({ratio[0]:.0%} of variance)")
    axes.set_ylabel(f"PC 2 ({ratio[1]:.0%} of variance)")
    axes.set_title("Latent directions of the cohort (PCA); stars are prototypes")
    axes.legend(loc="best", fontsize="small", markerscale=1.5)
    figure.tight_layout()
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png")
    plt.close(figure)
    return buffer.getvalue()
