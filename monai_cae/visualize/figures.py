"""The figures of Ferrante et al. 2022: t-SNE of the latent space with prototypes, reconstructions, cluster montages.

Every function takes numpy arrays, writes a PNG with matplotlib's Agg backend and returns its path. Figures are drawn on
an Agg canvas directly, without pyplot, so nothing needs a display and the caller's backend (a notebook's, say) is
left alone;
:func:`log_figure_to_tensorboard` puts such a PNG into TensorBoard. The elbow curve is
:meth:`monai_cae.clustering.elbow.ElbowResult.plot`.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from typing import Any

import matplotlib
import matplotlib.image as mpimg
import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.colors import Normalize
from matplotlib.figure import Figure
from matplotlib.offsetbox import AnnotationBbox, OffsetImage
from sklearn.manifold import TSNE

__all__ = [
    "as_display_images",
    "log_figure_to_tensorboard",
    "plot_cluster_montage",
    "plot_cluster_samples",
    "plot_latent_tsne",
    "plot_reconstructions",
]


def as_display_images(images: np.ndarray, name: str = "images") -> np.ndarray:
    """Bring a batch of images to ``(N, H, W)`` (grey) or ``(N, H, W, 3)`` (colour) for ``imshow``.

    Accepted: ``(N, H, W)``; channel-first ``(N, C, H, W)`` with ``C`` 1 or 3; 3D volumes ``(N, C, D, H, W)`` with
    ``C`` 1 or 3, shown at their middle slice of ``D``.

    Args:
        images: the batch.
        name: name used in error messages.

    Returns:
        The images as float32.

    Raises:
        ValueError: for any other shape.
    """
    images = np.asarray(images, dtype=np.float32)
    if images.ndim == 5 and images.shape[1] in (1, 3):
        images = images[:, :, images.shape[2] // 2]
    if images.ndim == 4 and images.shape[1] in (1, 3):
        images = images[:, 0] if images.shape[1] == 1 else np.moveaxis(images, 1, -1)
    if images.ndim == 3 or (images.ndim == 4 and images.shape[-1] == 3):
        return images
    raise ValueError(
        f"{name} must be (N, H, W), (N, C, H, W) or (N, C, D, H, W) with C in (1, 3), got shape {images.shape}."
    )


def _scaled(images: np.ndarray) -> np.ndarray:
    """Min-max scaled to [0, 1] over the whole batch, so that intensities stay comparable between images."""
    low, high = float(images.min()), float(images.max())
    return (images - low) / max(high - low, 1e-8)


def _show(ax: Any, image: np.ndarray | None) -> None:
    ax.set_xticks([])
    ax.set_yticks([])
    for spine in ax.spines.values():
        spine.set_visible(False)
    if image is not None:
        ax.imshow(image, cmap="gray", vmin=0.0, vmax=1.0)


def _figure(rows: int, columns: int, figsize: tuple[float, float]) -> tuple[Figure, np.ndarray]:
    fig = Figure(figsize=figsize)
    FigureCanvasAgg(fig)  # attaches the Agg canvas: rendering needs no display and no pyplot state
    return fig, fig.subplots(rows, columns, squeeze=False)


def _save(fig: Figure, path: str | os.PathLike, dpi: int) -> str:
    path = os.fspath(path)
    if os.path.dirname(path):
        os.makedirs(os.path.dirname(path), exist_ok=True)
    fig.savefig(path, dpi=dpi)
    return path


def _labels(values: np.ndarray, name: str, n: int) -> np.ndarray:
    values = np.asarray(values).reshape(-1)
    if len(values) != n:
        raise ValueError(f"{name} must hold one value per feature row ({n}), got {len(values)}.")
    return values.astype(np.int64)


def _scatter_panel(ax: Any, xy: np.ndarray, values: np.ndarray, title: str, names: Sequence[str] | None) -> None:
    # one discrete colour per value; tab10 / tab20 keep neighbouring ids distinguishable
    uniques = np.unique(values)
    cmap = matplotlib.colormaps["tab10" if len(uniques) <= 10 else "tab20"]
    for i, value in enumerate(uniques):
        members = values == value
        label = names[value] if names is not None and 0 <= value < len(names) else str(value)
        ax.scatter(xy[members, 0], xy[members, 1], s=6, color=cmap(i % cmap.N), label=label, alpha=0.8, linewidths=0)
    ax.set_title(title)
    ax.set_xticks([])
    ax.set_yticks([])
    ax.legend(loc="best", fontsize=7, markerscale=2, frameon=True)


def plot_latent_tsne(
    features: np.ndarray,
    real_labels: np.ndarray,
    cluster_labels: np.ndarray,
    mapped_labels: np.ndarray,
    path: str | os.PathLike,
    prototypes: np.ndarray | None = None,
    prototype_images: np.ndarray | None = None,
    seed: int = 0,
    max_points: int = 3000,
    class_names: Sequence[str] | None = None,
    metric: str = "cosine",
    image_zoom: float | None = None,
    dpi: int = 100,
) -> str:
    """t-SNE of the latent space in three panels, as in Ferrante et al. 2022, Figs. 3 and 4.

    Panel A colours the points by real label, B by cluster, C by cluster label mapped to a real label. The
    prototypes are embedded together with the features, so that they land where their clusters are, and their
    decoded images are drawn over every panel at those positions ("the prototypes are also superimposed over the
    image to demonstrate the reconstruction of mean representatives of each cluster").

    Args:
        features: ``(N, D)`` latents.
        real_labels: ``(N,)`` true labels.
        cluster_labels: ``(N,)`` cluster of each latent.
        mapped_labels: ``(N,)`` label predicted from the cluster (e.g. ``ClusterLabelMapping.predict``).
        path: output PNG.
        prototypes: optional ``(K, D)`` prototypes in the same space as ``features``.
        prototype_images: optional ``(K, ...)`` decoded prototypes (any shape :func:`as_display_images` accepts);
            needs ``prototypes``.
        seed: seed of the subsample and of t-SNE.
        max_points: at most this many latents are embedded (t-SNE is quadratic in memory without Barnes-Hut and slow
            on large sets); a uniform random subsample is drawn above it.
        class_names: optional names of the real labels for the legends of A and C.
        metric: t-SNE input metric. Cosine by default because the CAE assigns latents to prototypes by cosine
            similarity, and KMeans prototypes of L2-normalised latents have a smaller norm than the latents.
        image_zoom: zoom of the prototype images; ``None`` sizes them to about 40 pixels.
        dpi: resolution of the PNG.

    Returns:
        ``path``.

    Raises:
        ValueError: when ``features`` is not ``(N, D)`` with ``N >= 2``, a label array has another length,
            ``prototypes`` is not ``(K, D)``, ``prototype_images`` is given without prototypes or with another
            ``K``, or ``max_points < 2``.
    """
    features = np.asarray(features, dtype=np.float32)
    if features.ndim != 2 or len(features) < 2:
        raise ValueError(f"features must be (N, D) with N >= 2, got shape {features.shape}.")
    if max_points < 2:
        raise ValueError(f"max_points must be at least 2, got {max_points}.")
    n = len(features)
    real = _labels(real_labels, "real_labels", n)
    clusters = _labels(cluster_labels, "cluster_labels", n)
    mapped = _labels(mapped_labels, "mapped_labels", n)
    if prototypes is not None:
        prototypes = np.asarray(prototypes, dtype=np.float32)
        if prototypes.ndim != 2 or prototypes.shape[1] != features.shape[1] or len(prototypes) < 1:
            raise ValueError(f"prototypes must be (K, {features.shape[1]}), got shape {prototypes.shape}.")
    thumbnails = None
    if prototype_images is not None:
        if prototypes is None:
            raise ValueError("prototype_images need prototypes: their positions come from embedding the prototypes.")
        thumbnails = _scaled(as_display_images(prototype_images, "prototype_images"))
        if len(thumbnails) != len(prototypes):
            raise ValueError(
                f"prototype_images must hold one image per prototype ({len(prototypes)}), got {len(thumbnails)}."
            )

    rng = np.random.default_rng(seed)
    keep = np.sort(rng.choice(n, size=max_points, replace=False)) if n > max_points else np.arange(n)
    data = features[keep] if prototypes is None else np.concatenate([features[keep], prototypes])
    # perplexity must stay below the number of points; 30 (the usual default) on anything but tiny sets
    perplexity = float(min(30.0, max(1.0, (len(data) - 1) / 3)))
    xy = TSNE(n_components=2, init="pca", perplexity=perplexity, metric=metric, random_state=seed).fit_transform(data)
    points, proto_xy = xy[: len(keep)], xy[len(keep) :]

    fig, axes = _figure(1, 3, (16, 5.5))
    panels = [
        ("A: real labels", real[keep], class_names),
        ("B: cluster labels", clusters[keep], None),
        ("C: cluster labels mapped to real labels", mapped[keep], class_names),
    ]
    for ax, (title, values, names) in zip(axes[0], panels):
        _scatter_panel(ax, points, values, title, names)
        if prototypes is None:
            continue
        ax.scatter(proto_xy[:, 0], proto_xy[:, 1], marker="*", s=120, c="black", zorder=3)
        if thumbnails is None:
            continue
        zoom = image_zoom if image_zoom is not None else 40.0 / max(thumbnails.shape[1:3])
        for k, (x, y) in enumerate(proto_xy):
            box = OffsetImage(thumbnails[k], cmap="gray", zoom=zoom, norm=Normalize(0.0, 1.0))
            ax.add_artist(AnnotationBbox(box, (x, y), frameon=True, pad=0.1, zorder=4))
            ax.annotate(str(k), (x, y), xytext=(0, 24), textcoords="offset points", ha="center", fontsize=8,
                        zorder=5)
    fig.suptitle(f"t-SNE of the latent space ({len(keep)} of {n} points)")
    fig.tight_layout()
    return _save(fig, path, dpi)


def plot_reconstructions(inputs: np.ndarray, reconstructions: np.ndarray, path: str | os.PathLike, n: int = 8,
                         dpi: int = 100) -> str:
    """Inputs (top row) above their reconstructions (bottom row), on one intensity scale.

    Args:
        inputs: ``(N, ...)`` images (any shape :func:`as_display_images` accepts).
        reconstructions: their reconstructions, same shape.
        path: output PNG.
        n: number of columns; the first ``min(n, N)`` images are shown.
        dpi: resolution of the PNG.

    Returns:
        ``path``.

    Raises:
        ValueError: for a shape mismatch, an unsupported shape, no images or ``n < 1``.
    """
    inputs = np.asarray(inputs)
    reconstructions = np.asarray(reconstructions)
    if inputs.shape != reconstructions.shape:
        raise ValueError(f"inputs {inputs.shape} and reconstructions {reconstructions.shape} must have the same shape.")
    if n < 1 or len(inputs) == 0:
        raise ValueError(f"need n >= 1 and at least one image, got n={n} and {len(inputs)} images.")
    count = min(n, len(inputs))
    both = _scaled(np.concatenate([as_display_images(inputs[:count], "inputs"),
                                   as_display_images(reconstructions[:count], "reconstructions")]))
    fig, axes = _figure(2, count, (1.2 * count + 0.8, 2.8))
    for row, name in enumerate(("input", "reconstruction")):
        for col in range(count):
            _show(axes[row, col], both[row * count + col])
        axes[row, 0].set_ylabel(name, fontsize=8)
    fig.tight_layout()
    return _save(fig, path, dpi)


def _grid(rows: list[tuple[str, np.ndarray]], columns: int, path: str | os.PathLike, dpi: int) -> str:
    """One labelled row per entry, blank cells where a row has fewer images than ``columns``."""
    fig, axes = _figure(len(rows), columns, (1.1 * columns + 1.2, 1.1 * len(rows) + 0.3))
    for r, (label, images) in enumerate(rows):
        for c in range(columns):
            _show(axes[r, c], images[c] if c < len(images) else None)
        axes[r, 0].set_ylabel(label, fontsize=8, rotation=0, ha="right", va="center")
    fig.tight_layout()
    return _save(fig, path, dpi)


def plot_cluster_montage(images: np.ndarray, clusters: np.ndarray, path: str | os.PathLike, per_cluster: int = 8,
                         seed: int = 0, dpi: int = 100) -> str:
    """Random members of each cluster, one row per cluster: what a stratum looks like.

    Args:
        images: ``(N, ...)`` images (any shape :func:`as_display_images` accepts).
        clusters: ``(N,)`` cluster of each image.
        path: output PNG.
        per_cluster: images per row (fewer when a cluster is smaller).
        seed: seed of the member sampling.
        dpi: resolution of the PNG.

    Returns:
        ``path``.

    Raises:
        ValueError: for an unsupported image shape, a cluster array of another length, no images or
            ``per_cluster < 1``.
    """
    shown = _scaled(as_display_images(images))
    clusters = _labels(clusters, "clusters", len(shown))
    if per_cluster < 1 or len(shown) == 0:
        raise ValueError(f"need per_cluster >= 1 and at least one image, got {per_cluster} and {len(shown)} images.")
    rng = np.random.default_rng(seed)
    rows = []
    for value in np.unique(clusters):
        members = np.flatnonzero(clusters == value)
        chosen = np.sort(rng.choice(members, size=min(per_cluster, len(members)), replace=False))
        rows.append((f"cluster {value}\n(n={len(members)})", shown[chosen]))
    return _grid(rows, per_cluster, path, dpi)


def plot_cluster_samples(samples_by_cluster: Mapping[int, np.ndarray], path: str | os.PathLike, dpi: int = 100) -> str:
    """Images generated for each stratum (e.g. by ``generate_stratum_images``), one row per cluster.

    Args:
        samples_by_cluster: cluster id to its ``(M, ...)`` generated images (any shape :func:`as_display_images`
            accepts); all rows share one intensity scale.
        path: output PNG.
        dpi: resolution of the PNG.

    Returns:
        ``path``.

    Raises:
        ValueError: for an empty mapping, an empty or unsupported sample array, or image sizes that differ.
    """
    if not samples_by_cluster:
        raise ValueError("samples_by_cluster must hold at least one cluster, got none.")
    shown = {k: as_display_images(v, f"samples of cluster {k}") for k, v in samples_by_cluster.items()}
    shapes = {v.shape[1:] for v in shown.values()}
    if len(shapes) != 1 or any(len(v) == 0 for v in shown.values()):
        found = {k: v.shape for k, v in shown.items()}
        raise ValueError(f"every cluster needs at least one sample and all of one size, got shapes {found}.")
    keys = sorted(shown)
    scaled = _scaled(np.concatenate([shown[k] for k in keys]))
    rows, start = [], 0
    for k in keys:
        rows.append((f"cluster {k}", scaled[start : start + len(shown[k])]))
        start += len(shown[k])
    return _grid(rows, max(len(v) for v in shown.values()), path, dpi)


def log_figure_to_tensorboard(writer: Any, tag: str, path: str | os.PathLike, step: int = 0) -> np.ndarray:
    """Add a PNG written by this module to TensorBoard's image tab.

    Args:
        writer: a ``torch.utils.tensorboard.SummaryWriter`` (anything with its ``add_image``).
        tag: image tag.
        path: PNG file.
        step: global step.

    Returns:
        The ``(H, W, 3)`` float image in [0, 1] that was logged.

    Raises:
        ValueError: when the file is not an image matplotlib can read as grey, RGB or RGBA.
    """
    image = mpimg.imread(os.fspath(path))
    if image.dtype == np.uint8:
        image = image.astype(np.float32) / 255.0
    if image.ndim == 2:
        image = np.repeat(image[..., None], 3, axis=-1)
    if image.ndim != 3 or image.shape[-1] not in (3, 4):
        raise ValueError(f"{path} must be a grey, RGB or RGBA image, got an array of shape {image.shape}.")
    # the alpha channel of matplotlib PNGs is opaque everywhere; TensorBoard expects RGB
    image = np.ascontiguousarray(image[..., :3], dtype=np.float32)
    writer.add_image(tag, image, step, dataformats="HWC")
    return image
