from __future__ import annotations

from .array_dataset import ArrayImageDataset
from .image_folder import IMAGE_EXTENSIONS, ImageFolderDataset, list_image_files, preprocessing_transform
from .factory import make_dataset
from .medmnist import MedMNISTDataset, load_medmnist
from .mnist import MNISTDataset, read_idx

__all__ = [
    "IMAGE_EXTENSIONS",
    "ImageFolderDataset",
    "list_image_files",
    "preprocessing_transform",
    "ArrayImageDataset", "MNISTDataset", "MedMNISTDataset", "load_medmnist", "make_dataset", "read_idx"]
