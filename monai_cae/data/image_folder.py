"""Folders of ordinary image files (PNG, JPEG, TIFF, NIfTI, MHA/NRRD) as a MONAI dataset."""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence

import numpy as np
import torch
from monai.data import Dataset
from monai.transforms import (
    Compose,
    EnsureTyped,
    LoadImaged,
    Lambdad,
    ResizeWithPadOrCropd,
    Resized,
    ScaleIntensityRangePercentilesd,
)
from monai.utils import ensure_tuple_rep

__all__ = ["IMAGE_EXTENSIONS", "ImageFolderDataset", "list_image_files", "preprocessing_transform"]

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".nii", ".nii.gz", ".mha", ".mhd", ".nrrd")


def list_image_files(root: str, extensions: Sequence[str] = IMAGE_EXTENSIONS) -> list[str]:
    """Image files below ``root``, recursively, in sorted order.

    Args:
        root: folder to scan.
        extensions: accepted file endings (case-insensitive).

    Returns:
        Sorted paths.

    Raises:
        FileNotFoundError: when ``root`` is not a folder.
    """
    if not os.path.isdir(root):
        raise FileNotFoundError(f"image folder not found: {os.path.abspath(root)}.")
    found = []
    for folder, _, names in os.walk(root):
        found.extend(os.path.join(folder, n) for n in names if n.lower().endswith(tuple(extensions)))
    return sorted(found)


def _to_grey(image: torch.Tensor) -> torch.Tensor:
    # RGB(A) photographs of films and screenshots: average the colour channels, drop alpha
    return image[:3].mean(0, keepdim=True) if image.shape[0] in (3, 4) else image[:1]


def preprocessing_transform(img_size: Sequence[int] | int = 28, keys: str = "image") -> Compose:
    """Load a 2D image file and bring it to the model's input: grey, channel-first, aspect-preserving resize.

    The longest side is resized to ``img_size`` and the other padded with zeros; intensities are mapped from the
    0.5th-99.5th percentiles to [0, 1] and clipped, which is robust to burnt-in text and outlier pixels. PNG/JPEG are
    read in array order (rows first), like MedMNIST.

    Args:
        img_size: model input size.
        keys: key holding the file path.

    Returns:
        A MONAI ``Compose`` over dictionaries.
    """
    size = ensure_tuple_rep(img_size, 2)
    return Compose(
        [
            LoadImaged(keys, image_only=True, ensure_channel_first=True, reverse_indexing=False),
            Lambdad(keys, _to_grey),
            Resized(keys, spatial_size=max(size), size_mode="longest", mode="area"),
            ResizeWithPadOrCropd(keys, spatial_size=size),
            ScaleIntensityRangePercentilesd(keys, lower=0.5, upper=99.5, b_min=0.0, b_max=1.0, clip=True),
            EnsureTyped(keys, dtype=torch.float32, track_meta=False),
        ]
    )


class ImageFolderDataset(Dataset):
    """Every image file below a folder, with labels from first-level sub-folder names when there are any.

    Items are ``{"image", "label", "index", "id"}`` with ``id`` the path relative to ``root``. When every file sits
    in a sub-folder, the sorted sub-folder names are the classes (``class_names``); otherwise labels are ``-1``.

    Args:
        root: folder to scan recursively.
        img_size: model input size.
        transform: loading transform; :func:`preprocessing_transform` when omitted.
        extensions: accepted file endings.

    Raises:
        FileNotFoundError: when ``root`` is missing.
        ValueError: when it holds no image file.
    """

    def __init__(
        self,
        root: str,
        img_size: Sequence[int] | int = 28,
        transform: Callable | None = None,
        extensions: Sequence[str] = IMAGE_EXTENSIONS,
    ) -> None:
        files = list_image_files(root, extensions)
        if not files:
            raise ValueError(f"no image files ({', '.join(extensions)}) found below {os.path.abspath(root)}.")
        relative = [os.path.relpath(f, root) for f in files]
        tops = [r.split(os.sep)[0] if os.sep in r else None for r in relative]
        self.class_names = sorted(set(tops)) if all(t is not None for t in tops) else []
        labels = [self.class_names.index(t) if self.class_names else -1 for t in tops]
        items = [
            {"image": f, "label": np.int64(label), "index": i, "id": r}
            for i, (f, r, label) in enumerate(zip(files, relative, labels))
        ]
        super().__init__(data=items, transform=transform or preprocessing_transform(img_size))
