"""Embedding whole datasets with a trained encoder."""

from __future__ import annotations

from collections.abc import Callable, Iterable

import numpy as np
import torch
from tqdm.auto import tqdm

__all__ = ["embed_dataset"]


@torch.no_grad()
def embed_dataset(
    encode: Callable[[torch.Tensor], torch.Tensor],
    data_loader: Iterable[dict],
    device: torch.device | str = "cpu",
    image_key: str = "image",
    label_key: str | None = "label",
    progress: bool = True,
    desc: str = "Embedding",
) -> tuple[np.ndarray, np.ndarray | None]:
    """Run ``encode`` over every batch of a loader, in loader order.

    Args:
        encode: function from an image batch to ``(B, D)`` features, e.g. ``network.encode``.
        data_loader: loader of dictionary batches.
        device: device the batches are moved to.
        image_key: key of the images in a batch.
        label_key: key of the labels, or ``None`` to skip them.
        progress: show a progress bar.
        desc: progress bar label.

    Returns:
        ``(features, labels)``: ``(N, D)`` float32 features and ``(N,)`` int64 labels (``None`` when
        ``label_key`` is ``None``).
    """
    features: list[np.ndarray] = []
    labels: list[np.ndarray] = []
    for batch in tqdm(data_loader, desc=desc, disable=not progress, leave=False):
        images = torch.as_tensor(batch[image_key]).to(device)
        features.append(encode(images).float().cpu().numpy())
        if label_key is not None:
            labels.append(torch.as_tensor(batch[label_key]).reshape(-1).cpu().numpy().astype(np.int64))
    stacked = np.concatenate(features) if features else np.zeros((0, 0), dtype=np.float32)
    return stacked, (np.concatenate(labels) if label_key is not None and labels else None)
