"""Embedding whole datasets with a trained encoder."""

from __future__ import annotations

from collections.abc import Callable, Iterable

import numpy as np
import torch
from monai.utils import convert_to_numpy
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
    return_images: bool = False,
) -> tuple[np.ndarray, np.ndarray | None] | tuple[np.ndarray, np.ndarray | None, np.ndarray]:
    """Run ``encode`` over every batch of a loader, in loader order.

    Args:
        encode: function from an image batch to ``(B, D)`` features, e.g. ``network.encode``.
        data_loader: loader of dictionary batches.
        device: device the batches are moved to.
        image_key: key of the images in a batch.
        label_key: key of the labels, or ``None`` to skip them.
        progress: show a progress bar.
        desc: progress bar label.
        return_images: also return the input images, for callers that show them next to their features (figures,
            TensorBoard's projector), so that the loader is walked only once.

    Returns:
        ``(features, labels)``: ``(N, D)`` float32 features and ``(N,)`` int64 labels (``None`` when
        ``label_key`` is ``None``); with ``return_images``, ``(features, labels, images)`` where ``images`` are the
        ``(N, C, ...)`` inputs as a numpy array.
    """
    features: list[np.ndarray] = []
    labels: list[np.ndarray] = []
    images: list[np.ndarray] = []
    for batch in tqdm(data_loader, desc=desc, disable=not progress, leave=False):
        batch_images = torch.as_tensor(batch[image_key])
        if return_images:
            # copied before the move to ``device``: the loader's batch is already on the CPU
            images.append(convert_to_numpy(batch_images))
        features.append(encode(batch_images.to(device)).float().cpu().numpy())
        if label_key is not None:
            labels.append(torch.as_tensor(batch[label_key]).reshape(-1).cpu().numpy().astype(np.int64))
    stacked = np.concatenate(features) if features else np.zeros((0, 0), dtype=np.float32)
    stacked_labels = np.concatenate(labels) if label_key is not None and labels else None
    if not return_images:
        return stacked, stacked_labels
    return stacked, stacked_labels, (np.concatenate(images) if images else np.zeros((0,), dtype=np.float32))
