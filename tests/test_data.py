"""Tests of the offline datasets: MedMNIST, MNIST (IDX), in-memory arrays and image folders."""

from __future__ import annotations

import gzip
import os

import numpy as np
import pytest
import torch
from PIL import Image

from monai_cae.data import (
    ArrayImageDataset,
    ImageFolderDataset,
    MedMNISTDataset,
    MNISTDataset,
    make_dataset,
    preprocessing_transform,
    read_idx,
)

# the shared data README: split sizes and (normal, pneumonia) counts of PneumoniaMNIST
PNEUMONIA_SPLITS = {"train": (4708, 1214, 3494), "val": (524, 135, 389), "test": (624, 234, 390)}
MNIST_PARTITION = {"train": 7000, "val": 1000, "test": 2000}


def medmnist_root(shared_data: str) -> str:
    return os.path.join(shared_data, "medmnist")


def mnist_root(shared_data: str) -> str:
    return os.path.join(shared_data, "mnist")


def write_idx(path: str, array: np.ndarray, type_code: int, compress: bool = False) -> None:
    """Reference IDX writer: magic 0x00 0x00 <type> <ndim>, big-endian int32 dims, big-endian data."""
    header = bytes([0, 0, type_code, array.ndim]) + b"".join(int(d).to_bytes(4, "big") for d in array.shape)
    payload = header + array.tobytes()
    with (gzip.open if compress else open)(path, "wb") as f:
        f.write(payload)


def raw_idx(path: str) -> np.ndarray:
    """Independent reader for the shared (gzip, uint8) MNIST files: skip the header by its declared ndim."""
    with gzip.open(path, "rb") as f:
        data = f.read()
    ndim = data[3]
    shape = [int.from_bytes(data[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim)]
    return np.frombuffer(data[4 + 4 * ndim :], dtype=np.uint8).reshape(shape)


def save_png(path: str, array: np.ndarray) -> None:
    os.makedirs(os.path.dirname(path), exist_ok=True)
    Image.fromarray(array).save(path)


# ---------------------------------------------------------------------------------------------------------------
# MedMNIST


@pytest.fixture(scope="module")
def pneumonia_npz(shared_data: str) -> dict[str, np.ndarray]:
    with np.load(os.path.join(medmnist_root(shared_data), "pneumoniamnist.npz")) as archive:
        return {key: archive[key] for key in archive.files}


@pytest.mark.parametrize("split", sorted(PNEUMONIA_SPLITS))
def test_medmnist_split_sizes_and_class_counts(shared_data: str, split: str) -> None:
    total, normal, pneumonia = PNEUMONIA_SPLITS[split]
    ds = MedMNISTDataset("pneumoniamnist", split, medmnist_root(shared_data))
    assert len(ds) == total
    counts = np.bincount(ds.labels.numpy(), minlength=2)
    assert counts.tolist() == [normal, pneumonia]


def percentile_scaled(raw: np.ndarray) -> np.ndarray:
    """Reference: each image's 0.5-99.5 percentile range mapped to [0, 1] and clipped, image by image."""
    out = np.empty(raw.shape, dtype=np.float64)
    for i, image in enumerate(raw.astype(np.float64)):
        low, high = np.percentile(image, [0.5, 99.5])
        out[i] = np.clip((image - low) / max(high - low, 1e-6), 0, 1)
    return out


@pytest.mark.parametrize("split", sorted(PNEUMONIA_SPLITS))
def test_medmnist_images_are_percentile_scaled_npz(shared_data: str, pneumonia_npz: dict, split: str) -> None:
    ds = MedMNISTDataset("pneumoniamnist", split, medmnist_root(shared_data))
    raw = pneumonia_npz[f"{split}_images"]
    raw_labels = pneumonia_npz[f"{split}_labels"].reshape(-1)
    assert raw.dtype == np.uint8
    assert ds.images.shape == (len(raw), 1, 28, 28) and ds.images.dtype == torch.float32
    reference = percentile_scaled(raw)
    np.testing.assert_allclose(ds.images[:, 0].numpy(), reference, rtol=0, atol=1e-5)
    assert float(ds.images.min()) == 0.0 and float(ds.images.max()) == 1.0
    for i in (0, len(raw) // 2, len(raw) - 1):
        item = ds[i]
        assert item["image"].shape == (1, 28, 28) and item["image"].dtype == torch.float32
        np.testing.assert_allclose(item["image"][0].numpy(), reference[i], atol=1e-5)
        assert item["index"] == i and item["id"] == str(i)
        assert int(item["label"]) == int(raw_labels[i])


def test_medmnist_unknown_split(shared_data: str) -> None:
    with pytest.raises(ValueError, match="validation"):
        MedMNISTDataset("pneumoniamnist", "validation", medmnist_root(shared_data))


def test_medmnist_missing_file_names_the_path(tmp_path) -> None:
    expected = os.path.abspath(os.path.join(tmp_path, "bloodmnist.npz"))
    with pytest.raises(FileNotFoundError) as info:
        MedMNISTDataset("bloodmnist", "train", str(tmp_path))
    assert expected in str(info.value)


# ---------------------------------------------------------------------------------------------------------------
# MNIST and IDX


@pytest.fixture(scope="module")
def mnist_raw(shared_data: str) -> tuple[np.ndarray, np.ndarray]:
    root = mnist_root(shared_data)
    return raw_idx(os.path.join(root, "t10k-images-idx3-ubyte.gz")), raw_idx(os.path.join(root, "t10k-labels-idx1-ubyte.gz"))


@pytest.fixture(scope="module")
def mnist_splits(shared_data: str) -> dict[str, MNISTDataset]:
    return {split: MNISTDataset(split, mnist_root(shared_data)) for split in MNIST_PARTITION}


def test_mnist_partition_sizes_disjoint_and_covering(mnist_splits: dict) -> None:
    ids = {split: [int(item["id"]) for item in ds.data] for split, ds in mnist_splits.items()}
    for split, size in MNIST_PARTITION.items():
        assert len(mnist_splits[split]) == size
        assert len(set(ids[split])) == size
    union = set(ids["train"]) | set(ids["val"]) | set(ids["test"])
    assert len(union) == sum(MNIST_PARTITION.values()) == 10000
    assert union == set(range(10000))


def test_mnist_labels_and_images_match_raw_idx(mnist_splits: dict, mnist_raw: tuple) -> None:
    images, labels = mnist_raw
    for ds in mnist_splits.values():
        ids = np.array([int(item["id"]) for item in ds.data])
        np.testing.assert_array_equal(ds.labels.numpy(), labels[ids].astype(np.int64))
        np.testing.assert_allclose(ds.images[:, 0].numpy(), percentile_scaled(images[ids]), rtol=0, atol=1e-5)
    # every digit occurs in the training subset (a random 70 % of 10,000 digits)
    assert set(np.unique(mnist_splits["train"].labels.numpy())) == set(range(10))


def test_mnist_partition_is_deterministic(shared_data: str, mnist_splits: dict) -> None:
    again = MNISTDataset("val", mnist_root(shared_data))
    assert [item["id"] for item in again.data] == [item["id"] for item in mnist_splits["val"].data]
    assert torch.equal(again.images, mnist_splits["val"].images)


@pytest.mark.parametrize("partition", [(7000, 1000, 2001), (5000, 5000), (-1, 1000, 2000)])
def test_mnist_bad_partition(shared_data: str, partition: tuple) -> None:
    with pytest.raises(ValueError, match="partition"):
        MNISTDataset("train", mnist_root(shared_data), partition=partition)


def test_mnist_bad_split_and_missing_files(shared_data: str, tmp_path) -> None:
    with pytest.raises(ValueError):
        MNISTDataset("holdout", mnist_root(shared_data))
    with pytest.raises(FileNotFoundError, match="t10k-images"):
        MNISTDataset("train", str(tmp_path))


@pytest.mark.parametrize("compress", [False, True])
@pytest.mark.parametrize(
    "array,type_code",
    [
        (np.arange(2 * 3 * 4, dtype=np.uint8).reshape(2, 3, 4), 0x08),
        (np.array([[-5, 70000], [2**31 - 1, -(2**31)], [0, 1]], dtype=">i4"), 0x0C),
        (np.array([3, 1, 4, 1, 5], dtype=np.uint8), 0x08),
    ],
)
def test_read_idx_round_trip(tmp_path, array: np.ndarray, type_code: int, compress: bool) -> None:
    path = os.path.join(tmp_path, "data.idx" + (".gz" if compress else ""))
    write_idx(path, array, type_code, compress)
    out = read_idx(path)
    assert out.shape == array.shape
    np.testing.assert_array_equal(out.astype(np.int64), array.astype(np.int64))


def test_read_idx_rejects_non_idx(tmp_path) -> None:
    path = os.path.join(tmp_path, "image.png")
    Image.fromarray(np.zeros((4, 4), np.uint8)).save(path)  # PNG magic starts with 0x89
    with pytest.raises(ValueError, match="not an IDX"):
        read_idx(path)
    unknown = os.path.join(tmp_path, "unknown.idx")
    with open(unknown, "wb") as f:
        f.write(bytes([0, 0, 0x42, 1, 0, 0, 0, 1, 7]))
    with pytest.raises(ValueError, match="0x42"):
        read_idx(unknown)


# ---------------------------------------------------------------------------------------------------------------
# ArrayImageDataset


def test_array_dataset_layouts() -> None:
    rng = np.random.default_rng(0)
    grey = rng.integers(0, 256, (5, 6, 7), dtype=np.uint8)
    ds = ArrayImageDataset(grey, intensity="dtype")
    assert ds.images.shape == (5, 1, 6, 7)
    np.testing.assert_allclose(ds.images[:, 0].numpy(), grey / 255.0, atol=1e-7)

    last = rng.integers(0, 256, (5, 6, 7, 3), dtype=np.uint8)
    ds = ArrayImageDataset(last, channel_last=True, intensity="dtype")
    assert ds.images.shape == (5, 3, 6, 7)
    # channel c of image n at (row, col) is last[n, row, col, c]
    assert float(ds.images[2, 1, 4, 5]) == pytest.approx(last[2, 4, 5, 1] / 255.0)
    np.testing.assert_allclose(ds.images.numpy(), last.transpose(0, 3, 1, 2) / 255.0, atol=1e-7)

    first = rng.integers(0, 256, (5, 2, 6, 7), dtype=np.uint8)
    ds = ArrayImageDataset(first, channel_last=False, intensity="dtype")
    assert ds.images.shape == (5, 2, 6, 7)
    np.testing.assert_allclose(ds.images.numpy(), first / 255.0, atol=1e-7)


@pytest.mark.parametrize(
    "dtype,value,expected",
    [(np.uint8, 255, 1.0), (np.uint8, 51, 0.2), (np.uint16, 65535, 1.0), (np.uint16, 255, 255 / 65535)],
)
def test_array_dataset_integer_scaling(dtype, value: int, expected: float) -> None:
    ds = ArrayImageDataset(np.full((2, 4, 4), value, dtype=dtype), intensity="dtype")
    assert ds.images.dtype == torch.float32
    assert torch.allclose(ds.images, torch.full((2, 1, 4, 4), expected), rtol=1e-6, atol=0)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_array_dataset_float_kept(dtype) -> None:
    images = np.array([[[-0.5, 2.0], [0.25, 7.0]]], dtype=dtype)
    ds = ArrayImageDataset(images, intensity="dtype")
    assert ds.images.dtype == torch.float32
    np.testing.assert_array_equal(ds.images[0, 0].numpy(), images[0].astype(np.float32))


@pytest.mark.parametrize("dtype", [np.uint8, np.uint16, np.float32])
def test_array_dataset_percentile_scaling_per_image(dtype) -> None:
    rng = np.random.default_rng(1)
    images = (rng.random((4, 9, 9)) * [[[10]], [[100]], [[1000]], [[50]]] + [[[0]], [[5]], [[20]], [[3]]]).astype(dtype)
    images[1, 0, 0] = images[1].max() * 3  # one hot pixel must not set the scale of its whole image
    ds = ArrayImageDataset(images)
    np.testing.assert_allclose(ds.images[:, 0].numpy(), percentile_scaled(images), atol=1e-5)
    # every image is scaled on its own: each spans [0, 1] whatever its exposure
    assert ds.images.flatten(1).min(1).values.tolist() == [0.0] * 4
    assert ds.images.flatten(1).max(1).values.tolist() == [1.0] * 4
    with pytest.raises(ValueError, match="intensity"):
        ArrayImageDataset(images, intensity="zscore")


def test_array_dataset_items_labels_and_ids() -> None:
    images = np.zeros((3, 4, 4), np.uint8)
    ds = ArrayImageDataset(images, labels=np.array([[2], [0], [1]]), ids=["a", "b", "c"])
    assert [int(ds[i]["label"]) for i in range(3)] == [2, 0, 1]
    assert [ds[i]["id"] for i in range(3)] == ["a", "b", "c"]
    assert [ds[i]["index"] for i in range(3)] == [0, 1, 2]
    unlabelled = ArrayImageDataset(images)
    assert [int(unlabelled[i]["label"]) for i in range(3)] == [-1, -1, -1]
    assert [unlabelled[i]["id"] for i in range(3)] == ["0", "1", "2"]


@pytest.mark.parametrize(
    "kwargs",
    [
        {"labels": np.zeros(2, np.int64)},
        {"labels": np.zeros(4, np.int64)},
        {"ids": ["a", "b"]},
        {"ids": ["a", "b", "c", "d"]},
    ],
)
def test_array_dataset_length_mismatch(kwargs: dict) -> None:
    with pytest.raises(ValueError):
        ArrayImageDataset(np.zeros((3, 4, 4), np.uint8), **kwargs)


@pytest.mark.parametrize("shape", [(4, 4), (2, 1, 4, 4, 4)])
def test_array_dataset_bad_ndim(shape: tuple) -> None:
    with pytest.raises(ValueError):
        ArrayImageDataset(np.zeros(shape, np.uint8))


# ---------------------------------------------------------------------------------------------------------------
# image folders


def top_bar(height: int = 28, width: int = 28) -> np.ndarray:
    image = np.full((height, width), 40, np.uint8)
    image[:4] = 230
    return image


@pytest.fixture
def image_folder(tmp_path) -> str:
    root = os.path.join(tmp_path, "train")
    save_png(os.path.join(root, "normal", "top.png"), top_bar())
    wide = np.full((20, 40), 200, np.uint8)  # H=20, W=40: resized to 14 x 28, padded above and below
    wide[:, :5] = 10
    save_png(os.path.join(root, "normal", "sub", "wide.png"), wide)
    rgb = np.zeros((28, 28, 3), np.uint8)
    rgb[..., 0] = 255
    rgb[14:, :, 1] = 255
    save_png(os.path.join(root, "pneumonia", "rgb.png"), rgb)
    with open(os.path.join(root, "pneumonia", "notes.txt"), "w") as f:
        f.write("not an image")
    return root


def test_image_folder_classes_labels_ids(image_folder: str) -> None:
    ds = ImageFolderDataset(image_folder)
    assert ds.class_names == ["normal", "pneumonia"]
    assert len(ds) == 3
    items = {ds[i]["id"]: ds[i] for i in range(len(ds))}
    assert set(items) == {os.path.join("normal", "top.png"), os.path.join("normal", "sub", "wide.png"),
                          os.path.join("pneumonia", "rgb.png")}
    assert int(items[os.path.join("normal", "top.png")]["label"]) == 0
    assert int(items[os.path.join("normal", "sub", "wide.png")]["label"]) == 0
    assert int(items[os.path.join("pneumonia", "rgb.png")]["label"]) == 1
    assert sorted(item["index"] for item in items.values()) == [0, 1, 2]
    for item in items.values():
        x = item["image"]
        assert tuple(x.shape) == (1, 28, 28) and x.dtype == torch.float32
        assert float(x.min()) >= 0.0 and float(x.max()) <= 1.0


def test_image_folder_without_subfolders_is_unlabelled(tmp_path) -> None:
    save_png(os.path.join(tmp_path, "a.png"), top_bar())
    save_png(os.path.join(tmp_path, "b", "c.png"), top_bar())
    ds = ImageFolderDataset(str(tmp_path))
    assert ds.class_names == []
    assert [int(ds[i]["label"]) for i in range(2)] == [-1, -1]


def test_orientation_rows_stay_rows(tmp_path) -> None:
    path = os.path.join(tmp_path, "top.png")
    save_png(path, top_bar())
    x = preprocessing_transform(28)({"image": path})["image"][0]
    assert torch.all(x[:4] == 1.0) and torch.all(x[4:] == 0.0)
    # the transposed pattern (a bright left column) stays a column
    save_png(path, np.ascontiguousarray(top_bar().T))
    x = preprocessing_transform(28)({"image": path})["image"][0]
    assert torch.all(x[:, :4] == 1.0) and torch.all(x[:, 4:] == 0.0)


def test_percentile_scaling_matches_numpy(tmp_path) -> None:
    # a 28 x 28 image is not resized, so the output is the percentile-scaled input
    raw = np.random.default_rng(0).integers(0, 256, (28, 28), dtype=np.uint8)
    path = os.path.join(tmp_path, "noise.png")
    save_png(path, raw)
    x = preprocessing_transform(28)({"image": path})["image"][0].numpy()
    low, high = np.percentile(raw.astype(np.float64), [0.5, 99.5])
    expected = np.clip((raw - low) / (high - low), 0.0, 1.0)
    np.testing.assert_allclose(x, expected, atol=1e-5)


@pytest.mark.parametrize("transpose", [False, True], ids=["wide", "tall"])
def test_non_square_keeps_aspect_ratio(tmp_path, transpose: bool) -> None:
    wide = np.full((20, 40), 200, np.uint8)
    wide[:, :8] = 10  # dark band on the left (the top when transposed)
    image = np.ascontiguousarray(wide.T) if transpose else wide
    path = os.path.join(tmp_path, "image.png")
    save_png(path, image)
    x = preprocessing_transform(28)({"image": path})["image"][0]
    if transpose:
        x = x.T
    # 40 -> 28 along the long side, 20 -> 14 along the short one, centred: 7 padded rows on each side
    assert torch.all(x[:7] == 0) and torch.all(x[21:] == 0)
    content = x[7:21]
    assert torch.all(content[:, 6:] == 1.0)  # the bright part, 32/40 of the width
    assert torch.all(content[:, :5] < 0.5)  # the dark band stays on the left (top) side
    assert torch.all(content[:, :5] == content[:1, :5])  # every content row identical


def test_rgb_becomes_channel_mean(tmp_path) -> None:
    rng = np.random.default_rng(1)
    rgb = rng.integers(0, 86, (28, 28, 3), dtype=np.uint8) * 3  # channel sums divisible by 3
    grey = (rgb.astype(np.int64).sum(-1) // 3).astype(np.uint8)
    rgb_path, grey_path = os.path.join(tmp_path, "rgb.png"), os.path.join(tmp_path, "grey.png")
    save_png(rgb_path, rgb)
    save_png(grey_path, grey)
    transform = preprocessing_transform(28)
    out_rgb, out_grey = transform({"image": rgb_path})["image"], transform({"image": grey_path})["image"]
    assert out_rgb.shape == (1, 28, 28)
    torch.testing.assert_close(out_rgb, out_grey, atol=1e-5, rtol=0)
    # and not, e.g., the red channel alone
    save_png(grey_path, rgb[..., 0])
    red = transform({"image": grey_path})["image"]
    assert not torch.allclose(out_rgb, red, atol=1e-2)


@pytest.mark.parametrize("img_size", [16, (32, 32)])
def test_img_size(tmp_path, img_size) -> None:
    save_png(os.path.join(tmp_path, "a", "x.png"), top_bar(30, 30))
    ds = ImageFolderDataset(str(tmp_path), img_size=img_size)
    size = img_size if isinstance(img_size, int) else img_size[0]
    assert tuple(ds[0]["image"].shape) == (1, size, size)


def test_empty_and_missing_folder(tmp_path) -> None:
    os.makedirs(os.path.join(tmp_path, "empty", "class"))
    with open(os.path.join(tmp_path, "empty", "class", "readme.txt"), "w") as f:
        f.write("no images")
    with pytest.raises(ValueError, match="no image files"):
        ImageFolderDataset(os.path.join(tmp_path, "empty"))
    with pytest.raises(FileNotFoundError):
        ImageFolderDataset(os.path.join(tmp_path, "missing"))


# ---------------------------------------------------------------------------------------------------------------
# factory


def test_make_dataset_dispatch(shared_data: str, image_folder: str) -> None:
    med = make_dataset("pneumoniamnist", "val", medmnist_root(shared_data))
    assert isinstance(med, MedMNISTDataset) and len(med) == PNEUMONIA_SPLITS["val"][0]
    mnist = make_dataset("mnist", "val", mnist_root(shared_data))
    assert isinstance(mnist, MNISTDataset) and len(mnist) == MNIST_PARTITION["val"]
    folder = make_dataset("folder", "train", os.path.dirname(image_folder), img_size=16)
    assert isinstance(folder, ImageFolderDataset) and len(folder) == 3
    assert tuple(folder[0]["image"].shape) == (1, 16, 16)
    with pytest.raises(FileNotFoundError):
        make_dataset("folder", "val", os.path.dirname(image_folder))
    with pytest.raises(ValueError):
        make_dataset("pneumoniamnist", "dev", medmnist_root(shared_data))
