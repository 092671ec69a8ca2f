"""Tests of the engines (trainer, kNN probe, sampling, RNG state, strata I/O) and the handlers."""

from __future__ import annotations

import csv
import glob
import json
import os
import random
import stat

import numpy as np
import pytest
import torch
from ignite.engine import Events
from ignite.metrics import Average
from monai.data import DataLoader
from monai.engines import IterationEvents
from monai.inferers import SimpleInferer
from torch import nn

from monai_cae.data import ArrayImageDataset
from monai_cae.engines import (
    CAETrainer,
    ClusterGaussianSampler,
    KNNProbeEvaluator,
    RNGState,
    StrataAssignment,
    StrataEvaluator,
    assign_strata,
    atomic_write,
    embed_dataset,
    write_assignments,
)
from monai_cae.handlers import (
    PrototypeDiscoveryHandler,
    TensorBoardCAEHandler,
    image_grid,
    latest_checkpoint,
    loss_parts,
)
from monai_cae.losses import CAELoss
from monai_cae.networks import ContrastiveAutoEncoder
from monai_cae.optimizers import LARS, lars_param_groups
from monai_cae.transforms import BatchPositivePair

# ---------------------------------------------------------------------------------------------------------------
# ClusterGaussianSampler


def two_clusters(seed: int = 0, n: int = 200) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    a = rng.multivariate_normal([0.0, 2.0, -1.0], [[1.0, 0.6, 0.0], [0.6, 2.0, -0.3], [0.0, -0.3, 0.5]], n)
    b = rng.multivariate_normal([5.0, 0.0, 3.0], np.diag([0.2, 0.3, 0.4]), n // 2)
    latents = np.concatenate([a, b])
    clusters = np.concatenate([np.full(n, 3), np.full(n // 2, 7)])  # non-contiguous cluster ids
    order = rng.permutation(len(latents))
    return latents[order], clusters[order]


@pytest.mark.parametrize("shrinkage", [0.0, 0.5, 1.0])
def test_sampler_fit_matches_numpy(shrinkage: float) -> None:
    latents, clusters = two_clusters()
    sampler = ClusterGaussianSampler(shrinkage=shrinkage).fit(latents, clusters)
    assert sorted(sampler.means) == [3, 7]
    for c in (3, 7):
        members = latents[clusters == c]
        mean = members.sum(0) / len(members)
        centred = members - mean
        cov = centred.T @ centred / (len(members) - 1)  # unbiased sample covariance
        expected = (1 - shrinkage) * cov + shrinkage * np.diag(np.diag(cov)) + 1e-6 * np.eye(3)
        np.testing.assert_allclose(sampler.means[c], mean, rtol=0, atol=1e-12)
        np.testing.assert_allclose(sampler.covariances[c], expected, rtol=0, atol=1e-12)
    if shrinkage == 1.0:
        off_diagonal = sampler.covariances[3] - np.diag(np.diag(sampler.covariances[3]))
        assert np.all(off_diagonal == 0)


def test_sampler_samples_follow_the_fit() -> None:
    latents, clusters = two_clusters(seed=1)
    sampler = ClusterGaussianSampler(shrinkage=0.5).fit(latents, clusters)
    n = 40_000
    for c in (3, 7):
        draws = sampler.sample(c, n, seed=0)
        assert draws.shape == (n, 3) and draws.dtype == torch.float32
        x = draws.double().numpy()
        cov = sampler.covariances[c]
        # standard error of the mean per axis: sqrt(var / n) <= sqrt(2 / 40000) = 0.007
        np.testing.assert_allclose(x.mean(0), sampler.means[c], atol=6 * np.sqrt(np.diag(cov).max() / n))
        np.testing.assert_allclose(np.cov(x, rowvar=False), cov, atol=0.05 * np.abs(cov).max())


def test_sampler_seeding_and_errors() -> None:
    latents, clusters = two_clusters()
    sampler = ClusterGaussianSampler().fit(latents, clusters)
    assert torch.equal(sampler.sample(3, 10, seed=5), sampler.sample(3, 10, seed=5))
    assert not torch.equal(sampler.sample(3, 10, seed=5), sampler.sample(3, 10, seed=6))
    assert not torch.equal(sampler.sample(3, 10, seed=5), sampler.sample(7, 10, seed=5))
    with pytest.raises(KeyError):
        sampler.sample(0, 10)
    with pytest.raises(ValueError, match="member"):
        ClusterGaussianSampler().fit(np.zeros((4, 2)) + np.arange(4)[:, None], np.array([0, 0, 0, 1]))
    with pytest.raises(ValueError):
        ClusterGaussianSampler().fit(np.zeros((4, 2)), np.zeros(5))
    with pytest.raises(ValueError):
        ClusterGaussianSampler().fit(np.zeros(4), np.zeros(4))
    for bad in (-0.1, 1.5):
        with pytest.raises(ValueError):
            ClusterGaussianSampler(shrinkage=bad)


# ---------------------------------------------------------------------------------------------------------------
# RNGState


def draw_everything(generator: torch.Generator) -> tuple:
    return (
        [random.random() for _ in range(3)],
        np.random.rand(3).tolist(),
        float(np.random.randn()),  # exercises numpy's cached-Gaussian state
        torch.rand(3).tolist(),
        torch.rand(3, generator=generator).tolist(),
    )


def test_rng_state_restores_all_generators(tmp_path) -> None:
    generator = torch.Generator().manual_seed(123)
    random.seed(1)
    np.random.seed(2)
    torch.manual_seed(3)
    np.random.randn()  # leave a cached Gaussian in numpy's state
    rng_state = RNGState([generator])
    path = os.path.join(tmp_path, "rng.pt")
    torch.save({"rng": rng_state.state_dict()}, path)
    first = draw_everything(generator)
    second = draw_everything(generator)
    assert first != second  # the generators moved on
    rng_state.load_state_dict(torch.load(path, weights_only=True)["rng"])
    assert draw_everything(generator) == first
    assert draw_everything(generator) == second


def test_rng_state_wrong_number_of_generators() -> None:
    state = RNGState([torch.Generator(), torch.Generator()]).state_dict()
    with pytest.raises(ValueError, match="2 generators"):
        RNGState([torch.Generator()]).load_state_dict(state)
    with pytest.raises(ValueError):
        RNGState().load_state_dict(state)


# ---------------------------------------------------------------------------------------------------------------
# atomic_write / write_assignments


@pytest.fixture
def umask():
    """Set a umask for one test and restore the previous one afterwards."""
    previous = os.umask(0o022)
    os.umask(previous)

    def set_umask(value: int) -> None:
        os.umask(value)

    yield set_umask
    os.umask(previous)


def mode_of(path: str) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


@pytest.mark.parametrize("mask", [0o022, 0o002, 0o027])
@pytest.mark.parametrize("binary", [False, True])
def test_atomic_write_complete_and_respects_umask(tmp_path, umask, mask: int, binary: bool) -> None:
    umask(mask)
    path = os.path.join(tmp_path, "sub", "file.bin" if binary else "file.txt")
    payload = bytes(range(256)) * 1000 if binary else "line,with,commas\n" * 5000
    atomic_write(path, lambda f: f.write(payload), mode="wb" if binary else "w")
    with open(path, "rb" if binary else "r", newline=None if binary else "") as f:
        assert f.read() == payload
    assert mode_of(path) == 0o666 & ~mask
    # the same permissions as a plain open() would give
    plain = os.path.join(tmp_path, "plain")
    open(plain, "w").close()
    assert mode_of(path) == mode_of(plain)
    assert sorted(os.listdir(os.path.dirname(path))) == [os.path.basename(path)]


@pytest.mark.parametrize("error", [RuntimeError, KeyboardInterrupt])
def test_atomic_write_failure_keeps_old_file(tmp_path, error: type) -> None:
    path = os.path.join(tmp_path, "result.csv")
    with open(path, "w") as f:
        f.write("old,complete\n")

    def write(f) -> None:
        f.write("new,partial\n" * 100)
        raise error("interrupted")

    with pytest.raises(error):
        atomic_write(path, write)
    with open(path) as f:
        assert f.read() == "old,complete\n"
    assert os.listdir(tmp_path) == ["result.csv"]
    # a failure without any previous file leaves nothing
    with pytest.raises(error):
        atomic_write(os.path.join(tmp_path, "fresh.csv"), write)
    assert os.listdir(tmp_path) == ["result.csv"]


def test_write_assignments(tmp_path, umask) -> None:
    umask(0o022)
    rng = np.random.default_rng(0)
    embeddings = rng.standard_normal((4, 5)).astype(np.float32)
    similarities = np.array([[0.9, 0.1, -0.2], [0.0, 0.5, 0.7], [0.3, 0.8, 0.1], [0.25, -1.0, 0.2]], np.float32)
    probabilities = np.exp(similarities / 0.1) / np.exp(similarities / 0.1).sum(1, keepdims=True)
    result = StrataAssignment(
        embeddings=embeddings,
        probabilities=probabilities,
        similarities=similarities,
        ids=["a.png", "b, with comma.png", 'c "quoted".png', "d.png"],
        indices=np.array([10, 11, 12, 13]),
        labels=np.array([0, 1, -1, 1]),
    )
    paths = write_assignments(result, str(tmp_path))
    np.testing.assert_array_equal(np.load(paths["embeddings"]), embeddings)
    with open(paths["assignments"], newline="") as f:
        rows = list(csv.reader(f))
    assert rows[0] == ["index", "id", "label", "cluster", "prob_0", "prob_1", "prob_2", "similarity"]
    assert len(rows) == 5
    expected_clusters = [0, 2, 1, 0]
    for i, row in enumerate(rows[1:]):
        assert row[:4] == [str(10 + i), result.ids[i], str(result.labels[i]), str(expected_clusters[i])]
        np.testing.assert_allclose([float(v) for v in row[4:7]], probabilities[i], atol=1e-6)
        assert float(row[7]) == pytest.approx(float(similarities[i].max()), abs=1e-6)
    for path in paths.values():
        assert mode_of(path) == 0o644
    assert sorted(os.listdir(tmp_path)) == ["assignments.csv", "embeddings.npy"]


# ---------------------------------------------------------------------------------------------------------------
# handler utilities


@pytest.mark.parametrize(
    "names,expected",
    [
        (["checkpoint_epoch=9.pt", "checkpoint_epoch=10.pt", "checkpoint_epoch=2.pt"], "checkpoint_epoch=10.pt"),
        (["checkpoint_epoch=3.pt", "model_epoch=50.pt", "notes.txt"], "checkpoint_epoch=3.pt"),
        # other kinds of checkpoint in the same folder must not be taken for the latest epoch
        (["checkpoint_epoch=10.pt", "checkpoint_final_iteration=400.pt", "checkpoint_key_metric=0.95.pt"],
         "checkpoint_epoch=10.pt"),
    ],
)
def test_latest_checkpoint(tmp_path, names: list[str], expected: str) -> None:
    for name in names:
        torch.save({"step": torch.tensor(1)}, os.path.join(tmp_path, name))
    assert latest_checkpoint(str(tmp_path)) == os.path.join(tmp_path, expected)


def test_latest_checkpoint_skips_a_file_truncated_by_a_kill(tmp_path) -> None:
    for epoch in (1, 2, 3):
        torch.save({"weights": torch.randn(1000)}, os.path.join(tmp_path, f"checkpoint_epoch={epoch}.pt"))
    newest = os.path.join(tmp_path, "checkpoint_epoch=3.pt")
    with open(newest, "rb") as f:
        head = f.read(os.path.getsize(newest) // 2)
    with open(newest, "wb") as f:
        f.write(head)
    assert latest_checkpoint(str(tmp_path)) == os.path.join(tmp_path, "checkpoint_epoch=2.pt")


def test_latest_checkpoint_none(tmp_path) -> None:
    torch.save({}, os.path.join(tmp_path, "model_epoch=5.pt"))
    open(os.path.join(tmp_path, "checkpoint_epoch=6.pt"), "w").close()
    with pytest.raises(FileNotFoundError):
        latest_checkpoint(str(tmp_path))
    with pytest.raises(FileNotFoundError):
        latest_checkpoint(os.path.join(tmp_path, "missing"))


@pytest.mark.parametrize(
    "output,expected",
    [
        (
            {"loss": torch.tensor(1.5), "contrastive": np.float32(1.25), "reconstruction": 0.5, "lr": 0.1,
             "phase": 1, "image": torch.zeros(2)},
            {"loss": 1.5, "contrastive": 1.25, "reconstruction": 0.5, "lr": 0.1},
        ),
        ({"loss": 2, "reconstruction": 2.0, "phase": 2}, {"loss": 2.0, "reconstruction": 2.0}),
        ({"image": torch.zeros(1)}, {}),
    ],
)
def test_loss_parts(output: dict, expected: dict) -> None:
    parts = loss_parts(output)
    assert parts == expected
    assert all(type(v) is float for v in parts.values())


def test_image_grid_2d() -> None:
    top = torch.arange(2 * 1 * 3 * 4, dtype=torch.float32).reshape(2, 1, 3, 4)  # values 0..23
    bottom = torch.full((2, 1, 3, 4), 5.0)
    bottom[1, 0, 2, 3] = 7.0
    grid = image_grid([top, bottom])
    assert grid.shape == (1, 6, 8)
    # each row is rescaled on its own: top by (x - 0) / 23, bottom by (x - 5) / 2
    torch.testing.assert_close(grid[:, :3, :4], top[0] / 23)
    torch.testing.assert_close(grid[:, :3, 4:], top[1] / 23)
    torch.testing.assert_close(grid[:, 3:, :4], (bottom[0] - 5) / 2)
    torch.testing.assert_close(grid[:, 3:, 4:], (bottom[1] - 5) / 2)
    assert float(grid[:, :3].min()) == 0.0 and float(grid[:, :3].max()) == 1.0
    # a constant row does not divide by zero
    flat = image_grid([torch.ones(3, 2, 4, 4)])
    assert flat.shape == (2, 4, 12) and torch.all(flat == 0)


def test_image_grid_3d_middle_slice() -> None:
    volume = torch.zeros(2, 1, 4, 5, 6)
    volume[:, :, :, :, 3] = torch.rand(2, 1, 4, 5) + 1.0  # the middle slice (6 // 2) is the only non-zero one
    grid = image_grid([volume, volume])
    assert grid.shape == (1, 8, 10)
    middle = volume[..., 3]
    expected = (middle - middle.min()) / (middle.max() - middle.min())
    torch.testing.assert_close(grid[:, :4, :5], expected[0])
    torch.testing.assert_close(grid[:, 4:, 5:], expected[1])


def test_image_grid_mismatched_rows() -> None:
    with pytest.raises(ValueError):
        image_grid([torch.zeros(2, 1, 4, 4), torch.zeros(3, 1, 4, 4)])
    with pytest.raises(ValueError):
        image_grid([torch.zeros(2, 1, 4, 4), torch.zeros(2, 1, 4, 5)])


def test_tensorboard_cae_handler_logs_into_the_writer_it_is_given(tmp_path) -> None:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    from torch.utils.tensorboard import SummaryWriter

    writer = SummaryWriter(log_dir=str(tmp_path))
    handler = TensorBoardCAEHandler(summary_writer=writer, num_images=4, embedding_loader=image_loader(20, 8),
                                    max_embeddings=12)
    make_trainer(tiny_network(), warmup_epochs=2, handlers=[handler]).run()
    handler.close()  # the writer is the caller's: it stays open, and later events go to the same file
    writer.add_scalar("after", 1.0, 0)
    writer.close()
    assert len(glob.glob(str(tmp_path / "events.out.tfevents.*"))) == 1
    events = EventAccumulator(str(tmp_path)).Reload()
    assert events.Tags()["scalars"] == ["after"]
    (tag,) = events.Tags()["images"]
    assert tag == "reconstruction (top: input view, bottom: output)_HW_0"
    assert [(e.step, e.encoded_image_string is not None) for e in events.Images(tag)] == [(1, True), (2, True)]
    image = events.Images(tag)[0]
    assert (image.height, image.width) == (2 * 28, 4 * 28)  # inputs above reconstructions, 4 per row
    projected = tmp_path / "00002" / "latent h"
    assert len((projected / "metadata.tsv").read_text().splitlines()) == 12
    assert (projected / "sprite.png").is_file() and (tmp_path / "projector_config.pbtxt").is_file()


def test_embed_dataset_walks_the_loader_once_for_features_labels_and_images() -> None:
    network = tiny_network().eval()
    loader = image_loader(20, 8)
    features, labels = embed_dataset(network.encode, loader, progress=False)
    batches = (batch for batch in loader)  # a one-shot iterable: a second walk would find nothing
    again, labels_again, images = embed_dataset(network.encode, batches, progress=False, return_images=True)
    np.testing.assert_array_equal(again, features)
    np.testing.assert_array_equal(labels_again, labels)
    np.testing.assert_array_equal(images, np.concatenate([batch["image"].numpy() for batch in loader]))
    assert features.shape == (20, 16) and images.shape == (20, 1, 28, 28) and images.dtype == np.float32


# ---------------------------------------------------------------------------------------------------------------
# CAETrainer


def tiny_network(seed: int = 0) -> ContrastiveAutoEncoder:
    torch.manual_seed(seed)
    return ContrastiveAutoEncoder(
        channels=(4, 8, 8), latent_size=16, projection_hidden_size=16, projection_size=8, condition_size=4
    )


def image_loader(n: int = 64, batch_size: int = 16, seed: int = 0) -> DataLoader:
    images = np.random.default_rng(seed).random((n, 28, 28), dtype=np.float32)
    return DataLoader(ArrayImageDataset(images), batch_size=batch_size, shuffle=False, num_workers=0)


def make_trainer(
    network: ContrastiveAutoEncoder, warmup_epochs: int = 1, max_epochs: int = 2, handlers=None, inferer=None
):
    optimizer = LARS(lars_param_groups(network, weight_decay=1e-6), lr=0.5, momentum=0.9, trust_coefficient=0.02)
    return CAETrainer(
        device="cpu",
        max_epochs=max_epochs,
        train_data_loader=image_loader(),
        network=network,
        optimizer=optimizer,
        loss_function=CAELoss(),
        pair_augmentation=BatchPositivePair(seed=0),
        warmup_epochs=warmup_epochs,
        train_handlers=handlers,
        inferer=inferer,
    )


def snapshot(module: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in module.state_dict().items()}


def identical(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def all_changed(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> bool:
    """Every parameter tensor differs (a trained part moves all its weights and biases)."""
    return all(not torch.equal(a[k], b[k]) for k in a)


TRAINED_IN_PHASE_1 = ("encoder", "projector", "decoder")


def test_phase_2_without_prototypes_raises() -> None:
    network = tiny_network()
    trainer = make_trainer(network)
    epochs_done = []
    trainer.add_event_handler(Events.EPOCH_COMPLETED, lambda e: epochs_done.append(e.state.epoch))
    with pytest.raises(RuntimeError, match="prototypes"):
        trainer.run()
    assert epochs_done == [1]  # phase 1 ran through, phase 2 refused to start


def test_trainer_phases_train_the_right_parts() -> None:
    network = tiny_network()
    parts = {name: getattr(network, name) for name in (*TRAINED_IN_PHASE_1, "conditional_decoder")}
    states: dict[str, dict] = {"start": {n: snapshot(m) for n, m in parts.items()}}
    outputs: dict[int, dict] = {}
    trainer = make_trainer(network)

    @trainer.on(Events.EPOCH_STARTED)
    def install_prototypes(engine) -> None:
        if engine.state.epoch == 2:
            states["end_1"] = {n: snapshot(m) for n, m in parts.items()}
            network.set_prototypes(torch.randn(3, 16, generator=torch.Generator().manual_seed(0)))
            states["start_2"] = {n: snapshot(m) for n, m in parts.items()}

    @trainer.on(Events.EPOCH_COMPLETED)
    def keep_output(engine) -> None:
        outputs[engine.state.epoch] = dict(engine.state.output)

    trainer.run()
    end = {n: snapshot(m) for n, m in parts.items()}

    # phase 1: encoder, projector and decoder learn, the conditional decoder is untouched
    for name in TRAINED_IN_PHASE_1:
        assert all_changed(states["start"][name], states["end_1"][name]), name
    assert identical(states["start"]["conditional_decoder"], states["end_1"]["conditional_decoder"])
    # phase 2: only the conditional decoder learns; the rest stays bit-identical (no momentum, no weight decay)
    for name in TRAINED_IN_PHASE_1:
        assert identical(states["end_1"][name], end[name]), name
    cond_start, cond_end = states["start_2"]["conditional_decoder"], end["conditional_decoder"]
    changed = [k for k in cond_start if not torch.equal(cond_start[k], cond_end[k])]
    assert any(k.startswith("decoder.") for k in changed) and any(k.startswith("condition.") for k in changed)
    assert "assignment.prototypes" not in changed  # a buffer, not learnt

    assert outputs[1]["phase"] == 1 and outputs[2]["phase"] == 2
    assert "contrastive" in outputs[1] and "contrastive" not in outputs[2]
    for output in outputs.values():
        assert np.isfinite(output["loss"]) and output["pred"].shape == output["view"].shape == (16, 1, 28, 28)
    assert outputs[2]["loss"] == outputs[2]["reconstruction"]


class CountingInferer(SimpleInferer):
    def __init__(self) -> None:
        super().__init__()
        self.calls = 0

    def __call__(self, inputs, network, *args, **kwargs):
        self.calls += 1
        return super().__call__(inputs, network, *args, **kwargs)


def test_trainer_runs_its_inferer_and_fires_monai_iteration_events() -> None:
    network = tiny_network()
    inferer = CountingInferer()
    trainer = make_trainer(network, max_epochs=1, inferer=inferer)
    seen: list[tuple] = []

    def record(event: IterationEvents):
        def handler(engine) -> None:
            output = engine.state.output
            grads = [p.grad for p in network.encoder.parameters()]
            seen.append((event, tuple(sorted(output)), all(g is not None for g in grads)))

        return handler

    for event in IterationEvents:
        trainer.add_event_handler(event, record(event))
    trainer.run()
    iterations = len(image_loader())
    assert inferer.calls == iterations
    per_iteration = [seen[i : i + 4] for i in range(0, len(seen), 4)]
    assert len(seen) == 4 * iterations
    for events in per_iteration:
        assert [e[0] for e in events] == [
            IterationEvents.FORWARD_COMPLETED, IterationEvents.LOSS_COMPLETED,
            IterationEvents.BACKWARD_COMPLETED, IterationEvents.MODEL_COMPLETED,
        ]
        # SupervisedTrainer's contract: pred after the forward pass, loss after the loss, gradients after backward
        assert events[0][1] == ("image", "pred") and events[1][1] == ("image", "loss", "pred")
        assert not events[1][2] and events[2][2]


@pytest.mark.parametrize("warmup_epochs,max_epochs", [(3, 2), (-1, 2)])
def test_trainer_invalid_warmup(warmup_epochs: int, max_epochs: int) -> None:
    with pytest.raises(ValueError, match="warmup_epochs"):
        make_trainer(tiny_network(), warmup_epochs=warmup_epochs, max_epochs=max_epochs)


# ---------------------------------------------------------------------------------------------------------------
# KNNProbeEvaluator


class MeanIntensityEncoder(nn.Module):
    """Stand-in network: h = (mean, 1 - mean) of each image, so bright and dark images point different ways."""

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        m = x.flatten(1).mean(1, keepdim=True)
        return torch.cat([m, 1 - m], dim=1)


def two_intensity_loader(n_per_class: int, seed: int, flip_labels: bool = False) -> DataLoader:
    rng = np.random.default_rng(seed)
    levels = np.repeat([0.1, 0.9], n_per_class)
    images = (levels[:, None, None] + 0.05 * rng.standard_normal((len(levels), 28, 28))).astype(np.float32)
    labels = np.repeat([0, 1], n_per_class)
    order = rng.permutation(len(labels))
    labels = 1 - labels if flip_labels else labels
    return DataLoader(ArrayImageDataset(images[order], labels[order], intensity="dtype"), batch_size=8, shuffle=False)


@pytest.mark.parametrize("k", [1, 5])
def test_knn_probe_separable_classes(k: int) -> None:
    evaluator = KNNProbeEvaluator(
        "cpu", two_intensity_loader(12, seed=1), MeanIntensityEncoder(), two_intensity_loader(20, seed=0), k=k
    )
    evaluator.run()
    assert evaluator.state.metrics["knn_accuracy"] == 1.0
    assert evaluator.bank.shape == (40, 2) and sorted(evaluator.bank_labels.tolist()) == [0] * 20 + [1] * 20


def test_knn_probe_wrong_bank_labels_score_zero() -> None:
    evaluator = KNNProbeEvaluator(
        "cpu",
        two_intensity_loader(12, seed=1),
        MeanIntensityEncoder(),
        two_intensity_loader(20, seed=0, flip_labels=True),
        k=5,
    )
    evaluator.run()
    assert evaluator.state.metrics["knn_accuracy"] == 0.0


def test_knn_probe_real_network_on_separable_data() -> None:
    network = tiny_network(seed=0)
    evaluator = KNNProbeEvaluator("cpu", two_intensity_loader(12, seed=1), network, two_intensity_loader(20, 0), k=5)
    evaluator.run()
    assert evaluator.state.metrics["knn_accuracy"] == 1.0
    # the bank is the network's embedding of the bank loader
    assert evaluator.bank.shape == (40, 16)


def test_knn_probe_bad_k() -> None:
    with pytest.raises(ValueError):
        KNNProbeEvaluator("cpu", [], MeanIntensityEncoder(), [], k=0)


# ---------------------------------------------------------------------------------------------------------------
# PrototypeDiscoveryHandler


def test_prototype_discovery_between_phases(tmp_path) -> None:
    network = tiny_network()
    output_dir = os.path.join(tmp_path, "clusters")
    prototypes_path = os.path.join(tmp_path, "models", "prototypes.npy")
    handler = PrototypeDiscoveryHandler(
        image_loader(), output_dir, k_values=(2, 3), prototypes_path=prototypes_path, progress=False
    )
    trainer = make_trainer(network, warmup_epochs=1, max_epochs=2, handlers=[handler])
    prototypes_at_phase_2: list[int] = []
    trainer.add_event_handler(Events.ITERATION_STARTED, lambda e: prototypes_at_phase_2.append(network.num_prototypes)
                              if e.state.epoch == 2 else None)
    trainer.run()

    assert network.num_prototypes in (2, 3)
    assert set(prototypes_at_phase_2) == {network.num_prototypes}  # in place for every phase-2 iteration
    assert {"elbow.json", "elbow.png", "kmeans.pkl", "prototypes.npy", "embeddings.npy"} <= set(os.listdir(output_dir))
    with open(os.path.join(output_dir, "elbow.json")) as f:
        summary = json.load(f)
    assert summary["k"] == network.num_prototypes and summary["k_values"] == [2, 3]
    prototypes = np.load(os.path.join(output_dir, "prototypes.npy"))
    np.testing.assert_array_equal(np.load(prototypes_path), prototypes)
    np.testing.assert_allclose(network.prototypes.numpy(), prototypes)
    # embeddings are the frozen encoder's latents of the loader (unchanged by phase 2)
    embeddings = np.load(os.path.join(output_dir, "embeddings.npy"))
    network.eval()
    with torch.no_grad():
        latents = torch.cat([network.encode(b["image"]) for b in image_loader()]).numpy()
    assert embeddings.shape == (64, 16)
    np.testing.assert_allclose(embeddings, latents, rtol=1e-5, atol=1e-6)
    # the prototypes are the KMeans centroids of the normalised embeddings
    assert handler.result is not None and handler.result.k == network.num_prototypes
    clusters = handler.result.predict(embeddings)
    unit = embeddings / np.linalg.norm(embeddings, axis=1, keepdims=True)
    expected = np.stack([unit[clusters == c].mean(0) for c in range(network.num_prototypes)])
    np.testing.assert_allclose(prototypes, expected, atol=1e-5)


def test_prototype_discovery_at_completion_without_phase_2(tmp_path) -> None:
    network = tiny_network()
    handler = PrototypeDiscoveryHandler(image_loader(), str(tmp_path), k_values=(2, 3), progress=False)
    make_trainer(network, warmup_epochs=1, max_epochs=1, handlers=[handler]).run()
    assert network.num_prototypes in (2, 3)
    assert os.path.isfile(os.path.join(tmp_path, "prototypes.npy"))


@pytest.mark.parametrize(("method", "criterion"), [("gmm", "silhouette"), ("spherical_kmeans", "bic")])
def test_prototype_discovery_with_another_clusterer_and_criterion(tmp_path, method: str, criterion: str) -> None:
    network = tiny_network()
    handler = PrototypeDiscoveryHandler(image_loader(), str(tmp_path), k_values=(2, 3, 4), progress=False,
                                        clustering_method=method, k_criterion=criterion,
                                        clustering_options={"n_init": 2})
    make_trainer(network, warmup_epochs=1, max_epochs=2, handlers=[handler]).run()
    assert handler.selection.criterion == criterion and handler.clustering.method == method
    assert network.num_prototypes == handler.clustering.k <= handler.selection.k
    with open(os.path.join(tmp_path, "k_selection.json")) as f:
        assert json.load(f)["k"] == handler.selection.k
    with open(os.path.join(tmp_path, "clustering.json")) as f:
        summary = json.load(f)
    assert summary["method"] == method and sum(summary["sizes"]) == 64
    assert os.path.isfile(os.path.join(tmp_path, f"k_{criterion}.png"))
    # the strata stay cosine prototypes: the unit mean direction of each cluster's embeddings
    embeddings = np.load(os.path.join(tmp_path, "embeddings.npy"))
    unit = embeddings / np.linalg.norm(embeddings, axis=1, keepdims=True)
    labels = handler.clustering.labels
    expected = np.stack([unit[labels == c].mean(0) for c in range(network.num_prototypes)])
    expected /= np.linalg.norm(expected, axis=1, keepdims=True)
    np.testing.assert_allclose(network.prototypes.numpy(), expected, atol=1e-5)
    np.testing.assert_allclose(np.load(os.path.join(tmp_path, "prototypes.npy")), expected, atol=1e-5)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [({"k_values": (3,)}, "at least two"), ({"clustering_method": "dbscan"}, "dbscan"),
     ({"k_criterion": "aic"}, "aic")],
)
def test_prototype_discovery_rejects_bad_arguments(tmp_path, kwargs: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        PrototypeDiscoveryHandler(image_loader(), str(tmp_path), **{"k_values": (2, 3), **kwargs})


def test_prototype_discovery_rejects_unparsed_options(tmp_path) -> None:
    with pytest.raises(TypeError, match="epochs"):
        PrototypeDiscoveryHandler(image_loader(), str(tmp_path), (2, 3), clustering_options="{'epochs': 3}")


# ---------------------------------------------------------------------------------------------------------------
# StrataEvaluator


def strata_network(prototypes: int = 3) -> ContrastiveAutoEncoder:
    torch.manual_seed(0)
    network = ContrastiveAutoEncoder(channels=(4, 8, 8), latent_size=16).eval()
    network.set_prototypes(torch.randn(prototypes, 16))
    return network


def strata_batches(sizes: list[int]) -> list[dict]:
    generator = torch.Generator().manual_seed(1)
    batches, start = [], 0
    for size in sizes:
        index = torch.arange(start, start + size)
        batches.append({"image": torch.rand(size, 1, 28, 28, generator=generator), "index": index,
                        "id": [f"img{i}" for i in index.tolist()], "label": index % 2})
        start += size
    return batches


class ShortLoader:
    """Yields fewer batches than its length, as a CohortDataLoader does when a whole batch fails to decode."""

    def __init__(self, batches: list[dict], length: int) -> None:
        self.batches, self.length = batches, length

    def __iter__(self):
        return iter(self.batches)

    def __len__(self) -> int:
        return self.length


@pytest.mark.parametrize("sizes, length", [([5, 5, 2], 3), ([4, 3], 5), ([6], 1)])
def test_strata_evaluator_matches_a_hand_computed_assignment_once_per_image(sizes: list[int], length: int) -> None:
    network = strata_network()
    batches = strata_batches(sizes)
    evaluator = StrataEvaluator("cpu", ShortLoader(batches, length), network, progress=False)
    forward_events = []
    evaluator.add_event_handler(IterationEvents.FORWARD_COMPLETED, lambda engine: forward_events.append(1))
    for run in range(2):  # a second run starts afresh
        evaluator.run()
        result = evaluator.assignment
        images = torch.cat([b["image"] for b in batches])
        with torch.no_grad():
            h = network.encoder(images)
        similarity = nn.functional.normalize(h, dim=1) @ nn.functional.normalize(network.prototypes, dim=1).T
        np.testing.assert_allclose(result.embeddings, h.numpy(), rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(result.similarities, similarity.numpy(), rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(result.probabilities, torch.softmax(similarity / 0.1, dim=1).numpy(), atol=1e-5)
        assert result.ids == [f"img{i}" for i in range(sum(sizes))]
        np.testing.assert_array_equal(result.indices, np.arange(sum(sizes)))
        np.testing.assert_array_equal(result.labels, np.arange(sum(sizes)) % 2)
        assert len(forward_events) == len(sizes) * (run + 1)


def test_strata_evaluator_feeds_stock_ignite_metrics_and_takes_an_empty_loader() -> None:
    network = strata_network(prototypes=4)
    evaluator = StrataEvaluator("cpu", strata_batches([3, 4]), network, inferer=SimpleInferer(), progress=False)
    Average(output_transform=lambda output: output["similarities"].max(1, keepdim=True).values).attach(evaluator, "nearest")
    evaluator.run()
    assert float(evaluator.state.metrics["nearest"]) == pytest.approx(float(evaluator.assignment.nearest_similarity.mean()))
    assert set(evaluator.state.output) >= {"image", "label", "pred", "probabilities", "similarities"}
    empty = assign_strata(network, ShortLoader([], 2), progress=False)
    assert empty.embeddings.shape == (0, 16) and empty.probabilities.shape == (0, 4) and empty.ids == []
