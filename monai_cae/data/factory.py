"""One entry point that builds any supported dataset by name, for bundle configs and presets."""

from __future__ import annotations

import os
from collections.abc import Sequence

import numpy as np
import torch
from monai.data import Dataset

from .archive import ArchiveDataset
from .image_folder import ImageFolderDataset
from .medmnist import MedMNISTDataset
from .mnist import MNISTDataset

__all__ = ["has_labels", "make_dataset"]


def make_dataset(
    name: str, split: str, root: str, img_size: Sequence[int] | int = 28, **archive_options
) -> Dataset | ArchiveDataset:
    """Build a dataset split by name.

    Args:
        name: ``"mnist"`` (the shared MNIST test set, partitioned), ``"folder"`` (an image folder with one
            sub-folder per split: ``<root>/<split>``), ``"archive"`` (a DICOM / NIfTI / PNG archive, split by
            patient: :class:`~monai_cae.data.ArchiveDataset`), or a MedMNIST flag such as ``"pneumoniamnist"``.
        split: ``"train"``, ``"val"`` or ``"test"`` (``"train"``, ``"val"`` or ``"all"`` for an archive).
        root: data folder.
        img_size: model input size (used by image folders and archives; the array datasets have a fixed size).
        archive_options: keyword arguments of :class:`~monai_cae.data.ArchiveDataset` (``cache_dir``,
            ``val_fraction``, ``record_dir``, filters, ...); only for ``"archive"``.

    Returns:
        A MONAI ``Dataset`` of ``{"image", "label", "index", "id"}`` items.

    Raises:
        FileNotFoundError: when the data is not where ``root`` says.
        ValueError: for an unknown split, or archive options given for another dataset.
    """
    if name == "archive":
        return ArchiveDataset(root, split, img_size, **archive_options)
    if archive_options:
        raise ValueError(f"options {sorted(archive_options)} apply to dataset 'archive' only, not {name!r}.")
    if name == "mnist":
        return MNISTDataset(split, root)
    if name == "folder":
        return ImageFolderDataset(os.path.join(root, split), img_size)
    return MedMNISTDataset(name, split, root)


def has_labels(dataset: torch.utils.data.Dataset) -> bool:
    """Whether every item of a dataset carries a class label (a validation kNN probe needs them).

    Args:
        dataset: a dataset of :func:`make_dataset` (its ``labels``, ``-1`` where unknown) or any dataset.

    Returns:
        ``True`` when the dataset exposes labels and none is negative; archives (labels never read) and unlabelled
        image folders give ``False``.
    """
    labels = getattr(dataset, "labels", None)
    if labels is None:
        return False
    labels = np.asarray(labels.cpu() if isinstance(labels, torch.Tensor) else labels)
    return labels.size > 0 and bool((labels >= 0).all())
