from __future__ import annotations

from .array_dataset import ArrayImageDataset
from .medmnist import MedMNISTDataset, load_medmnist
from .mnist import MNISTDataset, read_idx

__all__ = ["ArrayImageDataset", "MNISTDataset", "MedMNISTDataset", "load_medmnist", "read_idx"]
