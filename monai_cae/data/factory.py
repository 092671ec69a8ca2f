"""One entry point that builds any supported dataset by name, for bundle configs and presets."""

from __future__ import annotations

import os
from collections.abc import Sequence

from monai.data import Dataset

from .image_folder import ImageFolderDataset
from .medmnist import MedMNISTDataset
from .mnist import MNISTDataset

__all__ = ["make_dataset"]


def make_dataset(name: str, split: str, root: str, img_size: Sequence[int] | int = 28) -> Dataset:
    """Build a dataset split by name.

    Args:
        name: ``"mnist"`` (the shared MNIST test set, partitioned), ``"folder"`` (an image folder with one
            sub-folder per split: ``<root>/<split>``), or a MedMNIST flag such as ``"pneumoniamnist"``.
        split: ``"train"``, ``"val"`` or ``"test"``.
        root: data folder.
        img_size: model input size (used by image folders; the array datasets have a fixed size).

    Returns:
        A MONAI ``Dataset`` of ``{"image", "label", "index", "id"}`` items.

    Raises:
        FileNotFoundError: when the data is not where ``root`` says.
        ValueError: for an unknown split.
    """
    if name == "mnist":
        return MNISTDataset(split, root)
    if name == "folder":
        return ImageFolderDataset(os.path.join(root, split), img_size)
    return MedMNISTDataset(name, split, root)
