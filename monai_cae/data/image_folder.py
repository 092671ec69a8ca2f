"""Folders of image files (DICOM, NIfTI, PNG, JPEG, TIFF, MHA/NRRD) as a labelled MONAI dataset."""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence

import numpy as np
from monai.data import Dataset
from monai.transforms import Compose

from .cohort import cohort_transform
from .manifest import ITK_EXTENSIONS, NIFTI_EXTENSIONS, PIL_EXTENSIONS, SELECTED, scan_archive

__all__ = ["IMAGE_EXTENSIONS", "ImageFolderDataset", "preprocessing_transform"]

IMAGE_EXTENSIONS = (".dcm", *PIL_EXTENSIONS, *NIFTI_EXTENSIONS, *ITK_EXTENSIONS)
"""File endings of the formats an image folder reads; DICOM is also recognised by content, whatever its name."""


def preprocessing_transform(img_size: Sequence[int] | int = 28, keys: str = "image") -> Compose:
    """Load an image file of any supported format and bring it to the model's input.

    The same pipeline as the archive reports (:func:`~monai_cae.data.cohort_transform`): grey, channel-first,
    aspect-preserving resize of the longest side to ``img_size`` with zero padding, 0.5th-99.5th percentile scaling
    to [0, 1]. PNG/JPEG are read in array order (rows first), like MedMNIST; NIfTI is transposed to rows first.

    Args:
        img_size: model input size.
        keys: key holding the file path.

    Returns:
        A MONAI ``Compose`` over dictionaries.
    """
    return cohort_transform(img_size, keys=keys)


class ImageFolderDataset(Dataset):
    """Every readable image below a folder, with labels from first-level sub-folder names when there are any.

    The folder is scanned like an archive (:func:`~monai_cae.data.scan_archive`, headers only, any DICOM modality):
    DICOM with or without ``.dcm``, NIfTI, PNG/JPEG/BMP/TIFF and ITK formats; other files are left out. Items are
    ``{"image", "label", "index", "id"}`` with ``id`` the path relative to ``root``. When every image sits in a
    sub-folder, the sorted sub-folder names are the classes (``class_names``); otherwise labels are ``-1``.

    Args:
        root: folder to scan recursively.
        img_size: model input size.
        transform: loading transform; :func:`preprocessing_transform` when omitted.

    Raises:
        FileNotFoundError: when ``root`` is missing.
        ValueError: when it holds no readable image.
    """

    def __init__(self, root: str, img_size: Sequence[int] | int = 28, transform: Callable | None = None) -> None:
        entries = [
            e for e in scan_archive(root, modalities=None, views=None, body_parts=None, progress=False)
            if e.status == SELECTED
        ]
        if not entries:
            raise ValueError(f"no image files ({', '.join(IMAGE_EXTENSIONS)} or DICOM) found below {os.path.abspath(root)}.")
        tops = [e.image_id.split(os.sep)[0] if os.sep in e.image_id else None for e in entries]
        self.class_names = sorted(set(tops)) if all(t is not None for t in tops) else []
        self.labels = np.array([self.class_names.index(t) if self.class_names else -1 for t in tops], np.int64)
        items = [
            {"image": e.path, "format": e.format, "label": label, "index": i, "id": e.image_id}
            for i, (e, label) in enumerate(zip(entries, self.labels))
        ]
        super().__init__(data=items, transform=transform or preprocessing_transform(img_size))
