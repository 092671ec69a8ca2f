from __future__ import annotations

import os

import matplotlib.image as mpimg
import numpy as np
import pytest

from monai_cae.visualize import (
    as_display_images,
    log_figure_to_tensorboard,
    plot_cluster_montage,
    plot_cluster_samples,
    plot_latent_tsne,
    plot_reconstructions,
)
from monai_cae.visualize import figures


pytestmark = pytest.mark.usefixtures("one_thread")


def read_png(path: str) -> np.ndarray:
    assert os.path.isfile(path) and os.path.getsize(path) > 1000
    image = mpimg.imread(path)
    assert image.ndim == 3 and image.shape[-1] in (3, 4)
    assert float(image[..., :3].std()) > 0.01, "the figure is a constant image"
    return image[..., :3]


def blobs(n_per_cluster: int, k: int, dim: int = 8, seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    centres = 4.0 * np.eye(dim)[:k] + 1.0
    labels = np.repeat(np.arange(k), n_per_cluster)
    features = centres[labels] + 0.3 * rng.standard_normal((len(labels), dim))
    return features.astype(np.float32), labels, centres.astype(np.float32)


# --- t-SNE figure ----------------------------------------------------------------------------------------------------


class RecordingTSNE(figures.TSNE):
    inputs: list[np.ndarray] = []

    def fit_transform(self, X, y=None):  # noqa: N803 (sklearn's signature)
        RecordingTSNE.inputs.append(np.array(X))
        return super().fit_transform(X, y)


@pytest.mark.parametrize("with_prototypes", [True, False])
def test_latent_tsne_embeds_a_subsample_with_the_prototypes(tmp_path, monkeypatch, with_prototypes: bool) -> None:
    monkeypatch.setattr(figures, "TSNE", RecordingTSNE)
    RecordingTSNE.inputs = []
    features, labels, centres = blobs(70, 3)  # 210 points
    rng = np.random.default_rng(1)
    prototype_images = rng.random((3, 1, 12, 12)).astype(np.float32)
    path = plot_latent_tsne(
        features, labels, (labels + 1) % 3, labels, tmp_path / "sub" / "tsne.png",
        prototypes=centres if with_prototypes else None,
        prototype_images=prototype_images if with_prototypes else None,
        max_points=150, class_names=["a", "b", "c"],
    )
    assert path == str(tmp_path / "sub" / "tsne.png")
    image = read_png(path)
    assert image.shape[:2] == (550, 1600)  # figsize (16, 5.5) at 100 dpi
    (embedded,) = RecordingTSNE.inputs
    # 150 of the 210 latents, then the prototypes appended: they are embedded jointly, so they land in their clusters
    assert embedded.shape == (150 + (3 if with_prototypes else 0), 8)
    assert all(any(np.array_equal(row, f) for f in features) for row in embedded[:150])
    if with_prototypes:
        np.testing.assert_array_equal(embedded[150:], centres)


def test_latent_tsne_draws_the_prototype_images(tmp_path) -> None:
    features, labels, centres = blobs(20, 2)
    bright = np.ones((2, 16, 16), dtype=np.float32)
    bright[:, ::2] = 0.0  # a striped thumbnail: black and white pixels that the scatter plot alone does not have
    without = read_png(plot_latent_tsne(features, labels, labels, labels, tmp_path / "a.png", prototypes=centres))
    with_images = read_png(plot_latent_tsne(features, labels, labels, labels, tmp_path / "b.png", prototypes=centres,
                                            prototype_images=bright))
    assert without.shape == with_images.shape
    changed = np.abs(with_images - without).max(-1) > 0.2
    assert changed.sum() > 3 * 100  # three panels, each with two 40-pixel thumbnails


@pytest.mark.parametrize(
    "kwargs",
    [
        dict(features=np.zeros(10)),
        dict(real_labels=np.zeros(9)),
        dict(cluster_labels=np.zeros(11)),
        dict(mapped_labels=np.zeros(3)),
        dict(prototypes=np.zeros((2, 5))),
        dict(prototype_images=np.zeros((2, 8, 8))),  # without prototypes
        dict(prototypes=np.ones((2, 4)), prototype_images=np.zeros((3, 8, 8))),
        dict(prototypes=np.ones((2, 4)), prototype_images=np.zeros((2, 2, 8, 8))),
        dict(max_points=1),
    ],
)
def test_latent_tsne_bad_input_raises(tmp_path, kwargs: dict) -> None:
    args = dict(features=np.ones((10, 4)), real_labels=np.zeros(10), cluster_labels=np.zeros(10),
                mapped_labels=np.zeros(10), path=tmp_path / "x.png")
    args.update(kwargs)
    with pytest.raises(ValueError):
        plot_latent_tsne(**args)
    assert not os.path.exists(tmp_path / "x.png")


# --- image grids -----------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("shape", [(5, 16, 16), (5, 1, 16, 16), (5, 3, 16, 16), (5, 1, 6, 16, 16)])
@pytest.mark.parametrize("n", [3, 8])
def test_reconstructions_put_inputs_above_reconstructions(tmp_path, shape: tuple, n: int) -> None:
    inputs = np.zeros(shape, dtype=np.float32)
    reconstructions = np.ones(shape, dtype=np.float32)
    image = read_png(plot_reconstructions(inputs, reconstructions, tmp_path / "rec.png", n=n))
    columns = min(n, 5)
    assert image.shape[:2] == (280, int(round(100 * (1.2 * columns + 0.8))))
    # the inputs are black and the reconstructions white on one shared scale: the top half is darker
    top, bottom = image[: image.shape[0] // 2].mean(), image[image.shape[0] // 2 :].mean()
    assert bottom - top > 0.1


@pytest.mark.parametrize(
    "inputs, reconstructions, n",
    [
        (np.zeros((4, 1, 8, 8)), np.zeros((4, 1, 8, 9)), 4),
        (np.zeros((4, 2, 8, 8)), np.zeros((4, 2, 8, 8)), 4),  # 2 channels cannot be shown
        (np.zeros((4, 8)), np.zeros((4, 8)), 4),
        (np.zeros((4, 1, 8, 8)), np.zeros((4, 1, 8, 8)), 0),
        (np.zeros((0, 1, 8, 8)), np.zeros((0, 1, 8, 8)), 4),
    ],
)
def test_reconstructions_bad_input_raises(tmp_path, inputs, reconstructions, n: int) -> None:
    with pytest.raises(ValueError):
        plot_reconstructions(inputs, reconstructions, tmp_path / "x.png", n=n)


@pytest.mark.parametrize("per_cluster", [2, 6])
def test_cluster_montage_has_one_row_per_cluster(tmp_path, per_cluster: int) -> None:
    # cluster c holds images of intensity c / 3, so that the rows get brighter from top to bottom
    clusters = np.array([0] * 5 + [1] * 3 + [3] * 4)
    images = np.repeat((clusters / 3.0)[:, None, None, None], 12, axis=2).repeat(12, axis=3).astype(np.float32)
    image = read_png(plot_cluster_montage(images, clusters, tmp_path / "montage.png", per_cluster=per_cluster))
    rows = 3
    assert image.shape[:2] == (int(round(100 * (1.1 * rows + 0.3))), int(round(100 * (1.1 * per_cluster + 1.2))))
    # the montage shows members only: a cluster with a larger id has brighter members
    band = image.shape[0] // rows
    grid = image[:, int(image.shape[1] * 0.3) :]  # right of the row labels
    means = [grid[r * band : (r + 1) * band].mean() for r in range(rows)]
    assert means[0] < means[2]


def test_cluster_montage_bad_input_raises(tmp_path) -> None:
    with pytest.raises(ValueError):
        plot_cluster_montage(np.zeros((4, 1, 8, 8)), np.zeros(5), tmp_path / "x.png")
    with pytest.raises(ValueError):
        plot_cluster_montage(np.zeros((4, 1, 8, 8)), np.zeros(4), tmp_path / "x.png", per_cluster=0)
    with pytest.raises(ValueError):
        plot_cluster_montage(np.zeros((4, 8)), np.zeros(4), tmp_path / "x.png")


def test_cluster_samples_one_row_per_cluster(tmp_path) -> None:
    rng = np.random.default_rng(0)
    samples = {2: rng.random((3, 1, 10, 10)), 0: rng.random((5, 10, 10))}
    image = read_png(plot_cluster_samples(samples, tmp_path / "samples.png"))
    assert image.shape[:2] == (int(round(100 * (1.1 * 2 + 0.3))), int(round(100 * (1.1 * 5 + 1.2))))


@pytest.mark.parametrize(
    "samples",
    [{}, {0: np.zeros((2, 8, 8)), 1: np.zeros((2, 9, 9))}, {0: np.zeros((0, 8, 8))}, {0: np.zeros((2, 8))}],
)
def test_cluster_samples_bad_input_raises(tmp_path, samples: dict) -> None:
    with pytest.raises(ValueError):
        plot_cluster_samples(samples, tmp_path / "x.png")


@pytest.mark.parametrize(
    "shape, expected",
    [((2, 5, 6), (2, 5, 6)), ((2, 1, 5, 6), (2, 5, 6)), ((2, 3, 5, 6), (2, 5, 6, 3)), ((2, 1, 4, 5, 6), (2, 5, 6))],
)
def test_as_display_images_shapes(shape: tuple, expected: tuple) -> None:
    images = np.arange(np.prod(shape), dtype=np.float32).reshape(shape)
    shown = as_display_images(images)
    assert shown.shape == expected
    if len(shape) == 5:  # a volume is shown at its middle slice
        np.testing.assert_array_equal(shown, images[:, 0, 2])


# --- TensorBoard -----------------------------------------------------------------------------------------------------


class FakeWriter:
    def __init__(self) -> None:
        self.calls: list[tuple] = []

    def add_image(self, tag, image, step, dataformats="CHW") -> None:
        self.calls.append((tag, image, step, dataformats))


def test_log_figure_to_tensorboard_logs_the_png(tmp_path) -> None:
    path = plot_reconstructions(np.zeros((2, 8, 8)), np.ones((2, 8, 8)), tmp_path / "rec.png", n=2)
    writer = FakeWriter()
    logged = log_figure_to_tensorboard(writer, "recon", path, step=7)
    ((tag, image, step, dataformats),) = writer.calls
    assert (tag, step, dataformats) == ("recon", 7, "HWC")
    np.testing.assert_array_equal(image, mpimg.imread(path)[..., :3])
    assert logged.shape == (280, 320, 3) and 0.0 <= image.min() and image.max() <= 1.0


def test_log_figure_to_tensorboard_with_a_summary_writer(tmp_path) -> None:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    from torch.utils.tensorboard import SummaryWriter

    path = plot_reconstructions(np.zeros((2, 8, 8)), np.ones((2, 8, 8)), tmp_path / "rec.png", n=2)
    with SummaryWriter(str(tmp_path / "tb")) as writer:
        log_figure_to_tensorboard(writer, "figures/recon", path, step=3)
    events = EventAccumulator(str(tmp_path / "tb"), size_guidance={"images": 0}).Reload()
    (event,) = events.Images("figures/recon")
    assert (event.step, event.height, event.width) == (3, 280, 320)
