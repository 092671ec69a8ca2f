"""Tests of LabelFreeEvaluator: label-free validation metrics, their determinism and the trainer integration."""

from __future__ import annotations

import copy
import io
import logging
import math
import os

import numpy as np
import pytest
import torch
from ignite.engine import Events
from monai.data import DataLoader
from monai.handlers import StatsHandler, ValidationHandler
from sklearn.metrics import adjusted_rand_score
from torch import nn

from monai_cae.data import ArrayImageDataset
from monai_cae.engines import CAETrainer, LabelFreeEvaluator
from monai_cae.losses import CAELoss
from monai_cae.networks import ContrastiveAutoEncoder
from monai_cae.transforms import BatchPositivePair

pytestmark = pytest.mark.usefixtures("one_thread")

METRICS = ("val_loss", "val_contrastive", "val_reconstruction", "alignment", "uniformity", "strata_stability")


def tiny_network(seed: int = 0) -> ContrastiveAutoEncoder:
    torch.manual_seed(seed)
    return ContrastiveAutoEncoder(
        channels=(4, 8, 8), latent_size=16, projection_hidden_size=16, projection_size=8, condition_size=4
    )


@pytest.fixture(scope="module")
def images(shared_data: str) -> np.ndarray:
    """48 real PneumoniaMNIST validation images (28 x 28, uint8)."""
    with np.load(os.path.join(shared_data, "medmnist", "pneumoniamnist.npz")) as archive:
        return archive["val_images"][:48]


@pytest.fixture(scope="module")
def trained_state(images: np.ndarray, one_thread) -> dict[str, torch.Tensor]:
    """A tiny network after 10 phase-1 epochs: an untrained one maps every image to nearly the same ``z``
    (uniformity ~ -1e-7), which would make the metric comparisons vacuous."""
    network = tiny_network()
    loader = DataLoader(ArrayImageDataset(images), batch_size=16, shuffle=False, num_workers=0)
    trainer = CAETrainer(
        device="cpu",
        max_epochs=10,
        train_data_loader=loader,
        network=network,
        optimizer=torch.optim.Adam(network.parameters(), lr=3e-3),
        loss_function=CAELoss(),
        pair_augmentation=BatchPositivePair(seed=0),
        warmup_epochs=10,
    )
    trainer.run()
    return copy.deepcopy(network.state_dict())


def trained_network(state: dict[str, torch.Tensor]) -> ContrastiveAutoEncoder:
    network = tiny_network()
    network.load_state_dict(state)
    return network


class DropKeys(torch.utils.data.Dataset):
    """A dataset's items without some keys (an archive without labels, or without indices)."""

    def __init__(self, dataset: torch.utils.data.Dataset, keys: tuple[str, ...]) -> None:
        self.dataset, self.keys = dataset, keys

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, i: int) -> dict:
        return {k: v for k, v in self.dataset[i].items() if k not in self.keys}


def loader(images: np.ndarray, batch_size: int = 16, drop: tuple[str, ...] = (), shuffle: bool = False) -> DataLoader:
    dataset = ArrayImageDataset(images)  # no labels given: every label is -1
    if drop:
        dataset = DropKeys(dataset, drop)
    return DataLoader(dataset, batch_size=batch_size, shuffle=shuffle, num_workers=0)


def identity_pair(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    return x, x.clone()


def reference_metrics(network: ContrastiveAutoEncoder, data: DataLoader, augmentation, loss: CAELoss) -> dict:
    """The metrics computed directly: views batch by batch, float64 NumPy for alignment and uniformity with an
    explicit loop over the pairs, loss parts averaged with batch-size weights over batches of at least 2."""
    network.eval()
    aligned, count = [], 0
    pair_sums, pairs = [0.0, 0.0], 0
    loss_sums, loss_weight = {"total": 0.0, "contrastive": 0.0, "reconstruction": 0.0}, 0
    with torch.no_grad():
        for batch in data:
            x = batch["image"]
            v1, v2 = augmentation(x)
            h1, h2 = network.encode(v1), network.encode(v2)
            z1, z2 = network.project(h1), network.project(h2)
            if len(x) >= 2:
                parts = loss(z1, z2, v1, network.decode(h1), v2, network.decode(h2))
                for name in loss_sums:
                    loss_sums[name] += float(parts[name]) * len(x)
                loss_weight += len(x)
            u = [z.double().numpy() for z in (z1, z2)]
            u = [a / np.linalg.norm(a, axis=1, keepdims=True) for a in u]
            aligned.append(((u[0] - u[1]) ** 2).sum(axis=1))
            count += len(x)
            for view in range(2):
                for i in range(len(x)):
                    for j in range(i + 1, len(x)):
                        pair_sums[view] += math.exp(-2.0 * float(((u[view][i] - u[view][j]) ** 2).sum()))
            pairs += len(x) * (len(x) - 1) // 2
    return {
        "val_loss": loss_sums["total"] / loss_weight,
        "val_contrastive": loss_sums["contrastive"] / loss_weight,
        "val_reconstruction": loss_sums["reconstruction"] / loss_weight,
        "alignment": float(np.concatenate(aligned).sum() / count),
        "uniformity": (math.log(pair_sums[0] / pairs) + math.log(pair_sums[1] / pairs)) / 2,
    }


@pytest.mark.parametrize("drop", [(), ("label",), ("label", "index")])
def test_metrics_exist_and_finite_without_labels(images: np.ndarray, trained_state, drop: tuple[str, ...]) -> None:
    network = trained_network(trained_state)
    evaluator = LabelFreeEvaluator("cpu", loader(images, drop=drop), network, CAELoss(), BatchPositivePair(seed=0))
    evaluator.run()
    metrics = evaluator.state.metrics
    assert set(METRICS) <= set(metrics)
    for name in METRICS[:-1]:
        assert np.isfinite(metrics[name]), name
    assert math.isnan(metrics["strata_stability"])  # no prototypes yet
    assert 0.0 < metrics["alignment"] <= 4.0 and -4.0 <= metrics["uniformity"] < -0.1
    assert metrics["val_loss"] == pytest.approx(metrics["val_contrastive"] + 0.1 * metrics["val_reconstruction"])
    assert evaluator.state.key_metric_name == "val_loss"
    output = evaluator.state.output
    assert output["image"].shape == output["view"].shape == output["pred"].shape == (16, 1, 28, 28)


@pytest.mark.parametrize("n_images,batch_size", [(40, 40), (40, 16), (33, 16)])
@pytest.mark.parametrize("seed", [0, 7])
def test_metrics_match_direct_computation(images: np.ndarray, trained_state, n_images, batch_size, seed) -> None:
    network = trained_network(trained_state)
    data = loader(images[:n_images], batch_size=batch_size)  # 33 / 16: a last batch of one image, without negatives
    evaluator = LabelFreeEvaluator("cpu", data, network, CAELoss(), BatchPositivePair(seed=123), seed=seed)
    evaluator.run()
    # the evaluator's augmentation is reseeded with `seed`, so a fresh BatchPositivePair(seed) draws the same views
    expected = reference_metrics(network, data, BatchPositivePair(seed=seed), CAELoss())
    for name, value in expected.items():
        assert evaluator.state.metrics[name] == pytest.approx(value, rel=1e-6, abs=1e-9), name


def test_identity_views_align_perfectly(images: np.ndarray, trained_state) -> None:
    network = trained_network(trained_state)
    data = loader(images[:24], batch_size=24)
    evaluator = LabelFreeEvaluator("cpu", data, network, CAELoss(), identity_pair)
    evaluator.run()
    assert evaluator.state.metrics["alignment"] == 0.0  # the same input gives bit-identical z
    with torch.no_grad():
        z = network.project(network.encode(ArrayImageDataset(images[:24]).images)).double()
    u = z / z.norm(dim=1, keepdim=True)
    # both views equal, so uniformity is that of one view over its 24 * 23 / 2 pairs
    distances = ((u[:, None] - u[None]) ** 2).sum(-1)[tuple(torch.triu_indices(24, 24, 1))]
    expected = float(torch.exp(-2 * distances).mean().log())
    assert evaluator.state.metrics["uniformity"] == pytest.approx(expected, rel=1e-9)


def test_collapsed_projections_have_zero_uniformity() -> None:
    """Hand-computed bound: all images mapped to one direction give log E exp(0) = 0 and alignment 0."""

    class Collapsed(ContrastiveAutoEncoder):
        def project(self, h: torch.Tensor) -> torch.Tensor:
            return torch.ones(h.shape[0], 8) * 3.0

    torch.manual_seed(0)
    network = Collapsed(channels=(4, 8, 8), latent_size=16, projection_hidden_size=16, projection_size=8)
    data = loader(np.random.default_rng(0).random((8, 28, 28), dtype=np.float32), batch_size=4)
    evaluator = LabelFreeEvaluator("cpu", data, network, CAELoss(temperature=0.5), BatchPositivePair(seed=0))
    evaluator.run()
    assert evaluator.state.metrics["uniformity"] == 0.0
    assert evaluator.state.metrics["alignment"] == 0.0
    # NT-Xent with all similarities 1: each view's positive is one of the 2N - 1 = 7 equal candidates
    assert evaluator.state.metrics["val_contrastive"] == pytest.approx(math.log(7), rel=1e-6)


def test_validation_is_deterministic_and_leaves_the_training_stream_alone(images: np.ndarray, trained_state) -> None:
    network = trained_network(trained_state)
    train_augmentation = BatchPositivePair(seed=3)
    untouched = copy.deepcopy(train_augmentation)
    evaluator = LabelFreeEvaluator("cpu", loader(images), network, CAELoss(), train_augmentation, seed=5)
    runs = []
    for epoch in (1, 2):
        evaluator.run(epoch)
        runs.append(dict(evaluator.state.metrics))
    # every run draws the same views
    assert all(runs[0][k] == runs[1][k] for k in METRICS[:-1])
    # the training augmentation's generator was never drawn from
    batch = ArrayImageDataset(images[:8]).images
    for got, want in zip(train_augmentation(batch), untouched(batch)):
        assert torch.equal(got, want)
    # another validation seed gives other views
    other = LabelFreeEvaluator("cpu", loader(images), network, CAELoss(), train_augmentation, seed=6)
    other.run()
    assert other.state.metrics["alignment"] != runs[0]["alignment"]


def test_training_queue_is_neither_used_nor_filled(images: np.ndarray, trained_state) -> None:
    network = trained_network(trained_state)
    queued = CAELoss(queue_size=32)
    queued.contrastive.queue = torch.randn(32, 8)  # negatives from earlier training batches
    before = queued.contrastive.queue.clone()
    evaluator = LabelFreeEvaluator("cpu", loader(images), network, queued, BatchPositivePair(seed=0))
    evaluator.run()
    assert torch.equal(queued.contrastive.queue, before) and queued.training
    plain = LabelFreeEvaluator("cpu", loader(images), network, CAELoss(), BatchPositivePair(seed=0))
    plain.run()
    assert evaluator.state.metrics["val_loss"] == plain.state.metrics["val_loss"]


def hard_strata(network: ContrastiveAutoEncoder, x: torch.Tensor, prototypes: torch.Tensor) -> np.ndarray:
    with torch.no_grad():
        h = network.encode(x)
    similarity = nn.functional.normalize(h, dim=1) @ nn.functional.normalize(prototypes, dim=1).t()
    return similarity.argmax(dim=1).numpy()


@pytest.mark.parametrize("shuffle", [False, True])
def test_strata_stability(images: np.ndarray, trained_state, shuffle: bool) -> None:
    network = trained_network(trained_state)
    x = ArrayImageDataset(images).images
    with torch.no_grad():
        latents = network.encode(x)
    first, second = latents[[0, 12, 24]].clone(), latents[[6, 18, 30, 42]].clone()
    strata_first, strata_second = hard_strata(network, x, first), hard_strata(network, x, second)
    assert len(set(strata_first)) > 1 and len(set(strata_second)) > 1  # the test needs non-trivial partitions
    expected_change = adjusted_rand_score(strata_first, strata_second)
    assert expected_change < 0.99

    torch.manual_seed(0)  # the shuffled loader's order differs between runs; images are matched by index
    evaluator = LabelFreeEvaluator("cpu", loader(images, shuffle=shuffle), network, CAELoss(), BatchPositivePair())
    evaluator.run(1)
    assert math.isnan(evaluator.state.metrics["strata_stability"])  # no prototypes
    network.set_prototypes(first)
    evaluator.run(2)
    assert math.isnan(evaluator.state.metrics["strata_stability"])  # first validation with prototypes
    evaluator.run(3)
    assert evaluator.state.metrics["strata_stability"] == 1.0  # unchanged network
    network.set_prototypes(first[[2, 0, 1]])
    evaluator.run(4)
    assert evaluator.state.metrics["strata_stability"] == 1.0  # permuted prototypes: same partition, renumbered
    network.set_prototypes(second)
    evaluator.run(5)
    assert evaluator.state.metrics["strata_stability"] == pytest.approx(expected_change, abs=1e-12)


def test_strata_need_index_or_position(images: np.ndarray, trained_state) -> None:
    """Without an index key, images are matched by their position in the (unshuffled) loader."""
    network = trained_network(trained_state)
    with torch.no_grad():
        network.set_prototypes(network.encode(ArrayImageDataset(images[:3]).images))
    evaluator = LabelFreeEvaluator("cpu", loader(images, drop=("index",)), network, CAELoss(), BatchPositivePair())
    evaluator.run(1)
    evaluator.run(2)
    assert evaluator.state.metrics["strata_stability"] == 1.0


def test_previous_strata_survive_a_checkpoint(images: np.ndarray, trained_state) -> None:
    network = trained_network(trained_state)
    with torch.no_grad():
        network.set_prototypes(network.encode(ArrayImageDataset(images[[0, 20, 40]]).images))
    evaluator = LabelFreeEvaluator("cpu", loader(images), network, CAELoss(), BatchPositivePair())
    evaluator.run(1)
    buffer = io.BytesIO()
    torch.save(evaluator.state_dict(), buffer)
    buffer.seek(0)
    restored = LabelFreeEvaluator("cpu", loader(images), network, CAELoss(), BatchPositivePair())
    restored.load_state_dict(torch.load(buffer, weights_only=True))
    restored.run(2)
    assert restored.state.metrics["strata_stability"] == 1.0
    fresh = LabelFreeEvaluator("cpu", loader(images), network, CAELoss(), BatchPositivePair())
    fresh.load_state_dict(fresh.state_dict())  # empty previous strata load as "none yet"
    fresh.run(1)
    assert math.isnan(fresh.state.metrics["strata_stability"])


def test_best_metric_is_the_lowest_loss(images: np.ndarray, trained_state) -> None:
    trained, untrained = trained_network(trained_state), tiny_network()
    network = tiny_network()
    evaluator = LabelFreeEvaluator("cpu", loader(images), network, CAELoss(), BatchPositivePair())
    losses = []
    for epoch, source in enumerate((untrained, trained, untrained), start=1):
        network.load_state_dict(source.state_dict())
        evaluator.run(epoch)
        losses.append(evaluator.state.metrics["val_loss"])
    assert losses[0] != losses[1]
    assert evaluator.state.best_metric == min(losses)
    assert evaluator.state.best_metric_epoch == int(np.argmin(losses)) + 1


def test_network_modes_are_restored(images: np.ndarray, trained_state) -> None:
    network = trained_network(trained_state)
    network.train()
    network.encoder.eval()  # as the trainer leaves it in phase 2
    modes = [m.training for m in network.modules()]
    evaluator = LabelFreeEvaluator("cpu", loader(images[:16]), network, CAELoss(), BatchPositivePair())
    evaluator.run()
    assert [m.training for m in network.modules()] == modes


@pytest.mark.parametrize("seed", [-1, 1.5, True, None])
def test_invalid_seed(images: np.ndarray, seed) -> None:
    with pytest.raises(ValueError, match="seed"):
        LabelFreeEvaluator("cpu", loader(images), tiny_network(), CAELoss(), BatchPositivePair(), seed=seed)


def test_invalid_callables(images: np.ndarray) -> None:
    with pytest.raises(TypeError, match="pair_augmentation"):
        LabelFreeEvaluator("cpu", loader(images), tiny_network(), CAELoss(), "flip")
    with pytest.raises(TypeError, match="loss_function"):
        LabelFreeEvaluator("cpu", loader(images), tiny_network(), 0.5, BatchPositivePair())


def train_two_epochs(images: np.ndarray, validate: bool) -> tuple[nn.Module, list[dict]]:
    """Phase 1 then phase 2 on 48 unlabelled images, with prototypes installed before training, optionally with
    the label-free evaluator as a ValidationHandler every epoch."""
    network = tiny_network()
    network.set_prototypes(torch.randn(3, 16, generator=torch.Generator().manual_seed(0)))
    loss, augmentation = CAELoss(), BatchPositivePair(seed=0)
    handlers, records = [], []
    if validate:
        evaluator = LabelFreeEvaluator(
            "cpu",
            loader(images, batch_size=24),
            network,
            loss,
            augmentation,
            val_handlers=[StatsHandler(name="label_free_test", iteration_log=False, tag_name="val")],
        )
        evaluator.add_event_handler(Events.EPOCH_COMPLETED, lambda e: records.append(dict(e.state.metrics)))
        handlers.append(ValidationHandler(validator=evaluator, interval=1, epoch_level=True))
    trainer = CAETrainer(
        device="cpu",
        max_epochs=2,
        train_data_loader=loader(images, batch_size=16),
        network=network,
        optimizer=torch.optim.Adam(network.parameters(), lr=1e-3),
        loss_function=loss,
        pair_augmentation=augmentation,
        warmup_epochs=1,
        train_handlers=handlers,
    )
    trainer.run()
    return network, records


def test_runs_as_validation_handler_of_the_trainer(images: np.ndarray) -> None:
    logger, log = logging.getLogger("label_free_test"), io.StringIO()
    handler, level = logging.StreamHandler(log), logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    try:
        validated, records = train_two_epochs(images, validate=True)
    finally:
        logger.setLevel(level)
        logger.removeHandler(handler)
    assert len(records) == 2
    for metrics in records:
        assert set(METRICS) <= set(metrics)
        assert all(np.isfinite(metrics[k]) for k in METRICS[:-1])
    assert math.isnan(records[0]["strata_stability"])
    # phase 2 freezes encoder, projector and warm-up decoder: same strata, same loss at both validations
    assert records[1]["strata_stability"] == 1.0
    assert records[1]["val_loss"] == records[0]["val_loss"]
    # StatsHandler logged the metrics of both validations
    logged = log.getvalue()
    assert logged.count("val_loss:") == 2 and all(name in logged for name in METRICS)
    # validation changed nothing in training: same augmentation stream, loss state and network modes
    plain, _ = train_two_epochs(images, validate=False)
    for key, value in plain.state_dict().items():
        assert torch.equal(validated.state_dict()[key], value), key
