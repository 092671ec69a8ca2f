"""In-memory image datasets in MONAI's dictionary format."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
import torch
from monai.data import Dataset

__all__ = ["ArrayImageDataset"]


class ArrayImageDataset(Dataset):
    """A MONAI ``Dataset`` over images held in memory, yielding ``{"image", "label", "index"}`` dictionaries.

    Images are converted once to channel-first ``float32`` tensors; integer images are scaled to [0, 1] by their
    dtype's maximum (255 for ``uint8``), float images are kept as they are. Small archives such as MedMNIST fit
    in memory many times over, and converting once keeps per-sample work out of the training loop.

    Args:
        images: ``(N, H, W)`` grey, ``(N, H, W, C)`` channel-last or ``(N, C, H, W)`` channel-first images (set
            ``channel_last`` accordingly for 4-D input).
        labels: optional ``(N,)`` or ``(N, 1)`` integer labels; ``-1`` is stored when absent.
        transform: optional MONAI transform applied to each item dictionary.
        channel_last: whether 4-D ``images`` are ``(N, H, W, C)``.
        ids: optional identifiers, one per image, stored under ``"id"``.

    Raises:
        ValueError: for images that are not 3-D or 4-D, or labels and ids whose length differs from the images'.
    """

    def __init__(
        self,
        images: np.ndarray,
        labels: np.ndarray | None = None,
        transform: Callable | None = None,
        channel_last: bool = True,
        ids: Sequence[str] | None = None,
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
        scale = float(np.iinfo(images.dtype).max) if np.issubdtype(images.dtype, np.integer) else 1.0
        self.images = torch.from_numpy(np.ascontiguousarray(images, dtype=np.float32) / scale)
        self.labels = torch.from_numpy(labels)
        items = [
            {"image": self.images[i], "label": self.labels[i], "index": i, "id": str(i) if ids is None else str(ids[i])}
            for i in range(n)
        ]
        super().__init__(data=items, transform=transform)
