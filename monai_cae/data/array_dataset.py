"""In-memory image datasets in MONAI's dictionary format."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
import torch
from monai.data import Dataset

__all__ = ["ArrayImageDataset", "INTENSITY_MODES"]

INTENSITY_MODES = ("percentile", "dtype")


class ArrayImageDataset(Dataset):
    """A MONAI ``Dataset`` over images held in memory, yielding ``{"image", "label", "index"}`` dictionaries.

    Images are converted once to channel-first ``float32`` tensors in [0, 1]. By default each image's 0.5th-99.5th
    percentile range is mapped to [0, 1] and clipped, the same robust normalisation the archive readers apply
    (:func:`~monai_cae.data.preprocessing_transform`), so a model trained here sees archive images on the same
    scale; on PneumoniaMNIST it also removes per-image exposure differences that otherwise dominate the latent
    space. ``intensity="dtype"`` instead divides integer images by their dtype's maximum (255 for ``uint8``) and
    keeps float images as they are. Small archives such as MedMNIST fit in memory many times over, and converting
    once keeps per-sample work out of the training loop.

    Args:
        images: ``(N, H, W)`` grey, ``(N, H, W, C)`` channel-last or ``(N, C, H, W)`` channel-first images (set
            ``channel_last`` accordingly for 4-D input).
        labels: optional ``(N,)`` or ``(N, 1)`` integer labels; ``-1`` is stored when absent.
        transform: optional MONAI transform applied to each item dictionary.
        channel_last: whether 4-D ``images`` are ``(N, H, W, C)``.
        ids: optional identifiers, one per image, stored under ``"id"``.
        intensity: ``"percentile"`` (per-image 0.5-99.5 percentile scaling) or ``"dtype"`` (divide by the dtype's
            maximum).

    Raises:
        ValueError: for images that are not 3-D or 4-D, labels and ids whose length differs from the images', or an
            unknown ``intensity``.
    """

    def __init__(
        self,
        images: np.ndarray,
        labels: np.ndarray | None = None,
        transform: Callable | None = None,
        channel_last: bool = True,
        ids: Sequence[str] | None = None,
        intensity: str = "percentile",
    ) -> None:
        images = np.asarray(images)
        if images.ndim == 3:
            images = images[:, None]
        elif images.ndim == 4 and channel_last:
            images = np.moveaxis(images, -1, 1)
        elif images.ndim != 4:
            raise ValueError(f"images must be (N, H, W) or (N, H, W, C) / (N, C, H, W), got shape {images.shape}.")
        n = len(images)
        labels = np.full(n, -1, dtype=np.int64) if labels is None else np.asarray(labels).reshape(-1).astype(np.int64)
        if len(labels) != n:
            raise ValueError(f"got {len(labels)} labels for {n} images.")
        if ids is not None and len(ids) != n:
            raise ValueError(f"got {len(ids)} ids for {n} images.")
        if intensity not in INTENSITY_MODES:
            raise ValueError(f"intensity must be one of {INTENSITY_MODES}, got {intensity!r}.")
        if intensity == "percentile":
            pixels = np.asarray(images, dtype=np.float32)
            axes = tuple(range(1, pixels.ndim))
            low = np.percentile(pixels, 0.5, axis=axes, keepdims=True)
            high = np.percentile(pixels, 99.5, axis=axes, keepdims=True)
            scaled = np.clip((pixels - low) / np.maximum(high - low, 1e-6), 0.0, 1.0)
        else:
            scale = float(np.iinfo(images.dtype).max) if np.issubdtype(images.dtype, np.integer) else 1.0
            scaled = np.asarray(images, dtype=np.float32) / scale
        self.images = torch.from_numpy(np.ascontiguousarray(scaled, dtype=np.float32))
        self.labels = torch.from_numpy(labels)
        items = [
            {"image": self.images[i], "label": self.labels[i], "index": i, "id": str(i) if ids is None else str(ids[i])}
            for i in range(n)
        ]
        super().__init__(data=items, transform=transform)
