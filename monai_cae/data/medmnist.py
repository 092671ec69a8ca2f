"""MedMNIST datasets read offline from the official ``.npz`` files."""

from __future__ import annotations

import os
from collections.abc import Callable

import numpy as np

from .array_dataset import ArrayImageDataset

__all__ = ["MedMNISTDataset", "load_medmnist"]

SPLITS = ("train", "val", "test")


def load_medmnist(name: str, split: str, root: str | os.PathLike) -> tuple[np.ndarray, np.ndarray]:
    """Read one split of a MedMNIST ``.npz`` file.

    The file is the one the ``medmnist`` package downloads (``<root>/<name>.npz`` with ``<split>_images`` and
    ``<split>_labels``). It is read with numpy, so neither the ``medmnist`` package nor its torchvision dependency
    is needed, and nothing is downloaded.

    Args:
        name: dataset flag, e.g. ``"pneumoniamnist"``; ``"pneumoniamnist_64"`` for the larger sizes.
        split: ``"train"``, ``"val"`` or ``"test"``.
        root: folder holding the ``.npz`` file.

    Returns:
        ``(images, labels)``: uint8 images ``(N, H, W)`` or ``(N, H, W, 3)`` and int64 labels ``(N,)``.

    Raises:
        ValueError: for an unknown split.
        FileNotFoundError: when the file is missing, naming the path that was tried.
    """
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, got {split!r}.")
    path = os.path.join(os.fspath(root), f"{name}.npz")
    if not os.path.isfile(path):
        raise FileNotFoundError(
            f"MedMNIST file not found: {os.path.abspath(path)}. Point dataset_dir at the folder holding {name}.npz "
            "(on a bundle's command line: --dataset_dir /path/to/folder)."
        )
    with np.load(path) as archive:
        images = archive[f"{split}_images"]
        labels = archive[f"{split}_labels"].reshape(-1).astype(np.int64)
    return images, labels


class MedMNISTDataset(ArrayImageDataset):
    """One split of a MedMNIST dataset as a MONAI ``Dataset`` of ``{"image", "label", "index", "id"}`` items.

    Images are channel-first ``float32`` in [0, 1].

    Args:
        name: dataset flag; ``"pneumoniamnist"`` is the project default.
        split: ``"train"``, ``"val"`` or ``"test"``.
        root: folder holding ``<name>.npz``.
        transform: optional MONAI transform applied to each item.

    Raises:
        ValueError: for an unknown split.
        FileNotFoundError: when the file is missing.
    """

    def __init__(
        self, name: str = "pneumoniamnist", split: str = "train", root: str = ".", transform: Callable | None = None
    ) -> None:
        images, labels = load_medmnist(name, split, root)
        self.name, self.split = name, split
        super().__init__(images, labels, transform=transform, channel_last=True)
