"""MNIST from the IDX files, with a fixed train/val/test partition of whatever set is available."""

from __future__ import annotations

import gzip
import os
from collections.abc import Callable, Sequence

import numpy as np

from .array_dataset import ArrayImageDataset

__all__ = ["MNISTDataset", "read_idx"]

PARTITION_SEED = 20221


def read_idx(path: str | os.PathLike) -> np.ndarray:
    """Read an IDX file (optionally gzip-compressed), the format MNIST is distributed in.

    Args:
        path: path to a ``.idx*-ubyte`` or ``.idx*-ubyte.gz`` file.

    Returns:
        The array with the shape and dtype stored in the header.

    Raises:
        ValueError: when the magic number is not an IDX one.
    """
    opener = gzip.open if os.fspath(path).endswith(".gz") else open
    with opener(path, "rb") as f:
        data = f.read()
    if len(data) < 4 or data[0] != 0 or data[1] != 0:
        raise ValueError(f"{path} is not an IDX file.")
    dtypes = {0x08: np.uint8, 0x09: np.int8, 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}
    if data[2] not in dtypes:
        raise ValueError(f"{path}: unknown IDX data type 0x{data[2]:02x}.")
    ndim = data[3]
    shape = tuple(int.from_bytes(data[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim))
    return np.frombuffer(data, dtype=dtypes[data[2]], offset=4 + 4 * ndim).reshape(shape)


class MNISTDataset(ArrayImageDataset):
    """MNIST digits as a MONAI ``Dataset``, partitioned into fixed train/val/test subsets.

    Only the 10,000-image MNIST test set ships with the project's shared data, so it is split by a fixed random
    permutation (seed ``PARTITION_SEED``) into disjoint subsets of the sizes in ``partition``; the same files always
    give the same partition.

    Args:
        split: ``"train"``, ``"val"`` or ``"test"``.
        root: folder holding ``t10k-images-idx3-ubyte.gz`` and ``t10k-labels-idx1-ubyte.gz``.
        partition: sizes of the train, val and test subsets; they must not exceed the number of images.
        transform: optional MONAI transform applied to each item.
        prefix: file name prefix, ``"t10k"`` for the test set or ``"train"`` for the full training set.

    Raises:
        ValueError: for an unknown split or a partition larger than the data.
        FileNotFoundError: when the files are missing.
    """

    def __init__(
        self,
        split: str = "train",
        root: str = ".",
        partition: Sequence[int] = (7000, 1000, 2000),
        transform: Callable | None = None,
        prefix: str = "t10k",
    ) -> None:
        splits = ("train", "val", "test")
        if split not in splits:
            raise ValueError(f"split must be one of {splits}, got {split!r}.")
        image_path = os.path.join(root, f"{prefix}-images-idx3-ubyte.gz")
        label_path = os.path.join(root, f"{prefix}-labels-idx1-ubyte.gz")
        for path in (image_path, label_path):
            if not os.path.isfile(path):
                raise FileNotFoundError(
                    f"MNIST file not found: {os.path.abspath(path)}. Point dataset_dir at the folder holding "
                    f"{prefix}-images-idx3-ubyte.gz and {prefix}-labels-idx1-ubyte.gz (--dataset_dir /path/to/folder)."
                )
        images, labels = read_idx(image_path), read_idx(label_path)
        if len(partition) != 3 or min(partition) < 0 or sum(partition) > len(images):
            raise ValueError(f"partition {tuple(partition)} must be three sizes adding up to at most {len(images)}.")
        order = np.random.default_rng(PARTITION_SEED).permutation(len(images))
        start = sum(partition[: splits.index(split)])
        chosen = np.sort(order[start : start + partition[splits.index(split)]])
        self.split = split
        super().__init__(images[chosen], labels[chosen], transform=transform, ids=[str(i) for i in chosen])
