"""Pixel cluster maps of the local branch drawn over their images, as PNG."""

from __future__ import annotations

import io
import os
from collections.abc import Sequence

import numpy as np
import torch

from monai_cae.inference import StrataAssignment
from monai_cae.utils.io import atomic_write

__all__ = ["cluster_overlay_png", "cluster_overlays", "write_cluster_overlays"]


def cluster_overlay_png(
    image: np.ndarray | torch.Tensor, cluster_map: np.ndarray | torch.Tensor, alpha: float = 0.45, scale: int = 4
) -> bytes:
    """The grey image beside the same image tinted by its pixel clusters (matplotlib ``tab10`` colours, cluster
    ``k`` always the same colour).

    Args:
        image: ``(H, W)`` or ``(1, H, W)`` grey image in [0, 1] (values outside are clipped).
        cluster_map: ``(H, W)`` integer cluster of each pixel, e.g. from
            :meth:`~monai_cae.networks.nets.ContrastiveAutoEncoder.cluster_map`.
        alpha: opacity of the colours.
        scale: integer upscaling (nearest), so that 28-pixel images are visible.

    Returns:
        PNG bytes of a ``(H * scale, 2 * W * scale + scale)`` RGB picture.

    Raises:
        ValueError: for an image that is not 2D grey, a map of another size, ``alpha`` outside [0, 1] or a scale
            below 1.
    """
    import matplotlib
    from PIL import Image

    grey = np.asarray(torch.as_tensor(image).detach().cpu().float())
    grey = grey[0] if grey.ndim == 3 and grey.shape[0] == 1 else grey
    clusters = np.asarray(torch.as_tensor(cluster_map).cpu()).astype(np.int64)
    if grey.ndim != 2 or clusters.shape != grey.shape:
        raise ValueError(f"expected a (H, W) image and map of the same size, got {grey.shape} and {clusters.shape}.")
    if not 0.0 <= alpha <= 1.0 or scale < 1:
        raise ValueError(f"alpha must be in [0, 1] and scale positive, got {alpha} and {scale}.")
    grey = np.clip(np.nan_to_num(grey), 0.0, 1.0)[..., None].repeat(3, axis=2)
    colours = np.asarray(matplotlib.colormaps["tab10"].colors)[clusters % 10]
    tinted = (1.0 - alpha) * grey + alpha * colours
    gap = np.ones((grey.shape[0], 1, 3))
    pixels = (np.concatenate([grey, gap, tinted], axis=1) * 255).round().astype(np.uint8)
    picture = Image.fromarray(pixels).resize((pixels.shape[1] * scale, pixels.shape[0] * scale), Image.NEAREST)
    buffer = io.BytesIO()
    picture.save(buffer, format="PNG", optimize=True)
    return buffer.getvalue()


def cluster_overlays(
    assignment: StrataAssignment, dataset: Sequence[dict], max_images: int | None = None, scale: int = 4
) -> dict[int, bytes]:
    """:func:`cluster_overlay_png` of the assigned images, by dataset index.

    Args:
        assignment: output of :func:`~monai_cae.engines.assign_strata` with ``cluster_maps``.
        dataset: the dataset that was assigned; ``dataset[index]["image"]`` is drawn (items with ``"ok": False``
            are passed over).
        max_images: the first this many images only; all when ``None``.
        scale: integer upscaling of each picture.

    Returns:
        PNG bytes by dataset index, in assignment order.

    Raises:
        ValueError: when the assignment has no cluster maps (the model has no local branch), or the maps are not 2D.
    """
    maps = assignment.cluster_maps
    if maps is None or maps.ndim != 3:
        raise ValueError("the assignment holds no 2D pixel cluster maps: the model needs a local branch.")
    overlays = {}
    for row, index in enumerate(assignment.indices[:max_images]):
        item = dataset[int(index)]
        if item.get("ok", True):
            overlays[int(index)] = cluster_overlay_png(item["image"], maps[row], scale=scale)
    return overlays


def write_cluster_overlays(
    assignment: StrataAssignment,
    dataset: Sequence[dict],
    output_dir: str,
    max_images: int | None = None,
    scale: int = 4,
) -> list[str]:
    """Write ``cluster_overlays/<index>.png`` (:func:`cluster_overlays`) for the assigned images.

    Args:
        assignment: output of :func:`~monai_cae.engines.assign_strata` with ``cluster_maps``.
        dataset: the dataset that was assigned.
        output_dir: folder in which ``cluster_overlays/`` is created.
        max_images: the first this many images only; all when ``None``.
        scale: integer upscaling of each picture.

    Returns:
        The written paths.

    Raises:
        ValueError: when the assignment has no 2D cluster maps.
    """
    written = []
    for index, png in cluster_overlays(assignment, dataset, max_images, scale).items():
        path = os.path.join(output_dir, "cluster_overlays", f"{index}.png")
        atomic_write(path, lambda f, b=png: f.write(b), mode="wb")
        written.append(path)
    return written
