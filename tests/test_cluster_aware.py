"""Cluster-aware negatives: the masked NT-Xent against a term-by-term reference, the pseudo-class handler on data
with known groups and inside a real trainer, and the bundle option through MONAI's command line."""

from __future__ import annotations

import os
import shutil
import subprocess

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from ignite.engine import Events
from monai.data import DataLoader
from sklearn.metrics import adjusted_rand_score

from monai_cae.data import ArrayImageDataset
from monai_cae.engines import CAETrainer
from monai_cae.clustering import agglomerative_pseudo_classes
from monai_cae.handlers import PseudoClassHandler, cluster_aware_negatives
from monai_cae.losses import CAELoss, NTXentLoss
from monai_cae.networks.nets import ContrastiveAutoEncoder
from monai_cae.transforms import BatchPositivePair

from conftest import REPO_ROOT
from test_bundle import SHORT_RUN, bundle_command

pytestmark = pytest.mark.usefixtures("one_thread")


def reference_cluster_ntxent(
    z1: torch.Tensor,
    z2: torch.Tensor,
    labels: torch.Tensor,
    temperature: float,
    queue: torch.Tensor | None = None,
    queue_labels: torch.Tensor | None = None,
) -> torch.Tensor:
    """Per-view cluster-aware NT-Xent in float64, one view and one candidate at a time: the positive, then every
    other view and queued projection whose pseudo-class differs from the anchor's."""
    z = F.normalize(torch.cat([z1, z2]).double(), dim=1)
    q = torch.zeros(0, z.shape[1], dtype=torch.float64) if queue is None else F.normalize(queue.double(), dim=1)
    q_labels = [-1] * len(q) if queue_labels is None else queue_labels.tolist()
    n = z1.shape[0]
    losses = []
    for i in range(2 * n):
        positive = (i + n) % (2 * n)
        anchor_class = int(labels[i % n])
        terms = [z[i] @ z[positive] / temperature]
        others = [k for k in range(2 * n) if k not in (i, positive) and labels[k % n] != anchor_class]
        terms += [z[i] @ z[k] / temperature for k in others]
        terms += [z[i] @ q[m] / temperature for m in range(len(q)) if q_labels[m] != anchor_class]
        losses.append(torch.logsumexp(torch.stack(terms), 0) - terms[0])
    return torch.stack(losses)


def label_pattern(pattern: str, n: int) -> torch.Tensor:
    if pattern == "distinct":
        return torch.randperm(n, generator=torch.Generator().manual_seed(n)) * 3
    if pattern == "same":
        return torch.full((n,), 4)
    return torch.randint(0, 3, (n,), generator=torch.Generator().manual_seed(n))


def projections(n: int, dim: int = 6, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    z1 = torch.randn(n, dim, dtype=torch.float64, generator=generator)
    return z1, z1 + 0.5 * torch.randn(n, dim, dtype=torch.float64, generator=generator)


# ---------------------------------------------------------------- the loss


@pytest.mark.parametrize("pattern", ["distinct", "same", "random"])
@pytest.mark.parametrize("temperature", [0.5, 0.1, 0.001])
@pytest.mark.parametrize("batch", [2, 5, 16])
def test_masked_ntxent_matches_the_reference(batch: int, temperature: float, pattern: str) -> None:
    z1, z2 = projections(batch, seed=batch)
    labels = label_pattern(pattern, batch)
    per_view = NTXentLoss(temperature, reduction="none")(z1, z2, labels)
    torch.testing.assert_close(per_view, reference_cluster_ntxent(z1, z2, labels, temperature), rtol=1e-10, atol=1e-9)
    if pattern == "distinct":
        # nothing but the anchor itself shares its class: the plain loss, bit for bit
        assert torch.equal(per_view, NTXentLoss(temperature, reduction="none")(z1, z2))
    if pattern == "same":
        # only the positive is left in every denominator: each view's loss is exactly 0
        assert torch.equal(per_view, torch.zeros(2 * batch, dtype=torch.float64))


@pytest.mark.parametrize("pattern", ["same", "random"])
@pytest.mark.parametrize("temperature", [0.5, 0.001])
def test_masked_ntxent_gradients_match_autograd_of_the_reference(temperature: float, pattern: str) -> None:
    z1, z2 = (z.requires_grad_() for z in projections(6, seed=1))
    labels = label_pattern(pattern, 6)
    ours = torch.autograd.grad(NTXentLoss(temperature)(z1, z2, labels), (z1, z2))
    expected = torch.autograd.grad(reference_cluster_ntxent(z1, z2, labels, temperature).mean(), (z1, z2))
    for got, want in zip(ours, expected):
        assert torch.isfinite(got).all()
        torch.testing.assert_close(got, want, rtol=1e-9, atol=1e-9)
    if pattern == "same":
        assert all(torch.equal(g, torch.zeros_like(g)) for g in ours)


def test_masked_ntxent_is_finite_in_float32_at_tiny_temperature() -> None:
    z1, z2 = (z.float().requires_grad_() for z in projections(32, seed=2))
    loss = NTXentLoss(0.001)(z1, z2, label_pattern("random", 32))
    loss.backward()
    assert torch.isfinite(loss) and torch.isfinite(z1.grad).all() and torch.isfinite(z2.grad).all()


def test_queued_negatives_keep_their_pseudo_classes() -> None:
    temperature, size = 0.2, 10
    loss = NTXentLoss(temperature, reduction="none", queue_size=size)
    queue, queue_labels = torch.zeros(0, 6, dtype=torch.float64), torch.zeros(0, dtype=torch.long)
    for step in range(4):
        z1, z2 = projections(4, seed=10 + step)
        # step 1 enqueues without pseudo-classes: those rows (-1) stay negatives for every anchor later
        labels = None if step == 1 else label_pattern("random", 4) + step % 2
        got = loss(z1, z2, labels)
        # without pseudo-classes every queued row is a negative: distinct classes no queued row carries
        expected = reference_cluster_ntxent(
            z1, z2, torch.arange(4) + 100 if labels is None else labels, temperature, queue, queue_labels
        )
        torch.testing.assert_close(got, expected, rtol=1e-6, atol=1e-6)
        queue = torch.cat([queue, z1])[-size:]
        queue_labels = torch.cat([queue_labels, torch.full((4,), -1) if labels is None else labels])[-size:]
        torch.testing.assert_close(loss.queue.double(), F.normalize(queue, dim=1), rtol=1e-6, atol=1e-7)
        assert torch.equal(loss.queue_labels, queue_labels)
    restored = NTXentLoss(temperature, queue_size=size)
    restored.load_state_dict(loss.state_dict())
    assert torch.equal(restored.queue_labels, loss.queue_labels)
    restored.reset_queue()
    assert restored.queue.numel() == 0 and restored.queue_labels.numel() == 0


def test_checkpoints_from_before_pseudo_classes_still_load() -> None:
    old = NTXentLoss(0.5, queue_size=6)
    old(torch.randn(3, 4), torch.randn(3, 4))
    state = {"queue": old.queue.clone()}  # what the loss saved before it kept queued pseudo-classes
    restored = NTXentLoss(0.5, queue_size=6)
    restored.load_state_dict(state)
    assert torch.equal(restored.queue, old.queue) and restored.queue_labels.tolist() == [-1, -1, -1]


def test_cae_loss_passes_pseudo_labels_on() -> None:
    z1, z2 = projections(5, seed=3)
    labels = label_pattern("random", 5)
    images = torch.zeros(5, 1, 4, 4)
    parts = CAELoss(0.3)(z1, z2, images, images, images, images, pseudo_labels=labels)
    torch.testing.assert_close(parts["contrastive"], NTXentLoss(0.3)(z1, z2, labels), rtol=0, atol=0)
    assert not torch.equal(parts["contrastive"], NTXentLoss(0.3)(z1, z2))


@pytest.mark.parametrize(
    "labels, message",
    [
        (torch.zeros(4, dtype=torch.long), r"must be \(3,\) integers"),
        (torch.zeros(3), r"must be \(3,\) integers, got torch.float32"),
        (torch.tensor([0, -2, 1]), "must be non-negative, got -2"),
    ],
)
def test_bad_pseudo_labels_fail_clearly(labels: torch.Tensor, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        NTXentLoss()(torch.randn(3, 4), torch.randn(3, 4), labels)


# ---------------------------------------------------------------- pseudo-classes


def separated_groups(groups: int = 4, per_group: int = 60, dim: int = 16, seed: int = 0) -> tuple[np.ndarray, ...]:
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(groups, dim))
    truth = np.repeat(np.arange(groups), per_group)
    # different radii too: the clustering must work on directions (normalised latents), not on norms
    radii = rng.uniform(0.5, 5.0, size=(len(truth), 1))
    return radii * (centres[truth] + 0.1 * rng.normal(size=(len(truth), dim))), truth


@pytest.mark.parametrize("max_fit_samples", [5000, 50])
def test_agglomerative_pseudo_classes_recover_known_groups(max_fit_samples: int) -> None:
    features, truth = separated_groups()
    labels = agglomerative_pseudo_classes(features, 4, max_fit_samples=max_fit_samples, seed=0)
    assert labels.dtype == np.int64 and set(labels.tolist()) == {0, 1, 2, 3}
    assert adjusted_rand_score(truth, labels) > 0.95


def test_agglomerative_pseudo_classes_reject_bad_arguments() -> None:
    with pytest.raises(ValueError, match="n_clusters must be in \\[2, 10\\] for 10 points, got 11"):
        agglomerative_pseudo_classes(np.zeros((10, 3)), 11)
    with pytest.raises(ValueError, match="got shape \\(10,\\)"):
        agglomerative_pseudo_classes(np.zeros(10), 2)
    with pytest.raises(ValueError, match="num_classes must be at least 2, got 1"):
        PseudoClassHandler([], num_classes=1)
    with pytest.raises(ValueError, match="interval must be at least 1, got 0"):
        PseudoClassHandler([], interval=0)
    assert cluster_aware_negatives("cluster_aware") and not cluster_aware_negatives("all")
    with pytest.raises(ValueError, match="negatives must be one of \\('all', 'cluster_aware'\\), got 'hard'"):
        cluster_aware_negatives("hard")


class RecordingLoss(CAELoss):
    """The real loss, remembering the pseudo-classes it was given."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.received: list[torch.Tensor | None] = []

    def forward(self, *args, pseudo_labels: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
        self.received.append(pseudo_labels)
        return super().forward(*args, pseudo_labels=pseudo_labels)


def group_images(groups: int = 3, per_group: int = 24) -> tuple[ArrayImageDataset, np.ndarray]:
    """Noisy copies of a few random templates, shuffled, so the dataset index says nothing of the group."""
    rng = np.random.default_rng(0)
    templates = rng.uniform(size=(groups, 28, 28))
    truth = rng.permutation(np.repeat(np.arange(groups), per_group))
    images = np.clip(templates[truth] + 0.03 * rng.normal(size=(len(truth), 28, 28)), 0, 1).astype(np.float32)
    return ArrayImageDataset(images, truth, intensity="dtype"), truth


def make_trainer(dataset, handler, loss, max_epochs: int = 5, seed: int = 0) -> CAETrainer:
    torch.manual_seed(seed)
    network = ContrastiveAutoEncoder(channels=(4, 8, 8), latent_size=16)
    network.set_prototypes(torch.randn(3, 16))  # phase 2 is not what these tests are about
    return CAETrainer(
        device="cpu",
        max_epochs=max_epochs,
        train_data_loader=DataLoader(dataset, batch_size=12, shuffle=True, drop_last=True),
        network=network,
        optimizer=torch.optim.SGD(network.parameters(), lr=0.05),
        loss_function=loss,
        pair_augmentation=BatchPositivePair(seed=seed),
        warmup_epochs=4,
        pseudo_classes=handler,
    )


def test_handler_recovers_groups_refreshes_on_schedule_and_feeds_the_loss() -> None:
    dataset, truth = group_images()
    loss = RecordingLoss(0.5, queue_size=24)
    handler = PseudoClassHandler(DataLoader(dataset, batch_size=32), num_classes=3, interval=2, progress=False,
                                 loss=loss)
    trainer = make_trainer(dataset, handler, loss)
    seen: dict[int, tuple[int, int, float]] = {}
    states, tables = {}, {}

    @trainer.on(Events.EPOCH_STARTED)  # after the handler, which the trainer attached first
    def record(engine: CAETrainer) -> None:
        seen[engine.state.epoch] = (handler.epoch, loss.contrastive.queue.numel(), adjusted_rand_score(truth,
                                                                                                       handler.table))
        tables[engine.state.epoch] = handler.table.clone()

    @trainer.on(Events.EPOCH_COMPLETED)
    def keep_weights(engine: CAETrainer) -> None:
        states[engine.state.epoch] = {k: v.clone() for k, v in engine.network.state_dict().items()}

    @trainer.on(Events.ITERATION_COMPLETED)
    def check_labels(engine: CAETrainer) -> None:
        if engine.state.epoch <= 4:
            assert torch.equal(loss.received[-1], handler.table[engine.state.batch["index"]])

    trainer.run()
    # refreshed before epochs 1 and 3 (every 2 epochs), not in phase 2 (epoch 5) although 5 is on the schedule
    assert {epoch: refreshed for epoch, (refreshed, _, _) in seen.items()} == {1: 1, 2: 1, 3: 3, 4: 3, 5: 3}
    # every refresh empties the negative queue (new class numbers), which then refills during the epoch
    assert [queued == 0 for _, queued, _ in seen.values()] == [True, False, True, False, False]
    assert min(ari for _, _, ari in seen.values()) > 0.95
    assert len(loss.received) == 4 * (len(dataset) // 12) and all(r is not None for r in loss.received)

    # resumed after epoch 2 from that epoch's weights, the refresh before epoch 3 gives the same table
    resumed_handler = PseudoClassHandler(DataLoader(dataset, batch_size=32), num_classes=3, interval=2,
                                         progress=False)
    resumed_handler.load_state_dict(handler.state_dict() | {"table": tables[2], "epoch": 1})
    resumed = make_trainer(dataset, resumed_handler, CAELoss(0.5), seed=1)
    resumed.network.load_state_dict(states[2])
    resumed.state.epoch, resumed.state.iteration = 2, 2 * resumed.state.epoch_length
    after: dict[int, torch.Tensor] = {}
    resumed.add_event_handler(Events.EPOCH_STARTED, lambda e: after.setdefault(e.state.epoch, resumed_handler.table))
    resumed.run()
    assert sorted(after) == [3, 4, 5] and torch.equal(after[3], tables[3]) and resumed_handler.epoch == 3


def test_lookup_fails_clearly() -> None:
    handler = PseudoClassHandler([], progress=False)
    with pytest.raises(RuntimeError, match="no pseudo-classes yet"):
        handler.lookup(torch.tensor([0]))
    handler.load_state_dict({"table": torch.tensor([1, -1, 0]), "epoch": 1})
    assert handler.lookup(torch.tensor([2, 0])).tolist() == [0, 1]
    with pytest.raises(ValueError, match=r"dataset indices \[1, 7\] have no pseudo-class"):
        handler.lookup(torch.tensor([0, 1, 7]))


# ---------------------------------------------------------------- the bundle option


def test_bundle_trains_with_cluster_aware_negatives_and_resumes_bit_identically(tmp_path, shared_data) -> None:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    # refreshes before epochs 1 and 3 (phase 2 is epoch 4), with a queue of negatives that each refresh empties
    overrides = {
        **SHORT_RUN, "warmup_epochs": 3, "val_interval": 5, "negatives": "cluster_aware", "pseudo_class_count": 4,
        "pseudo_class_interval": 2, "negative_queue_size": 512, "checkpoints_kept": 4,
        "dataset_dir": os.path.join(shared_data, "medmnist"),
    }

    def train(name: str, **extra) -> str:
        paths = {"output_dir": str(tmp_path / name), "model_dir": str(tmp_path / f"{name}_models")}
        result = subprocess.run(bundle_command("training", "train.json", **overrides, **paths, **extra),
                                cwd=REPO_ROOT, capture_output=True, text=True, timeout=300)
        assert result.returncode == 0, (result.stdout + result.stderr)[-3000:]
        return result.stdout + result.stderr

    log = train("straight")
    assert "Pseudo-classes at epoch 1: 4 classes" in log and "Pseudo-classes at epoch 3: 4 classes" in log
    assert "Pseudo-classes at epoch 2" not in log and "Pseudo-classes at epoch 4" not in log
    events = EventAccumulator(str(tmp_path / "straight" / "tensorboard")).Reload()
    contrastive = [e.value for e in events.Scalars("contrastive")]
    assert len(contrastive) == 3 * 18 and np.isfinite(contrastive).all()
    checkpoints = tmp_path / "straight" / "checkpoints"
    state = torch.load(checkpoints / "checkpoint_epoch=3.pt", weights_only=True)["pseudo_classes"]
    assert state["epoch"] == 3 and len(state["table"]) == 4708 and set(state["table"].tolist()) == {0, 1, 2, 3}

    # resumed after epoch 1: epoch 2 runs on the checkpointed table, epoch 3 recomputes it from the restored weights
    (tmp_path / "resumed" / "checkpoints").mkdir(parents=True)
    shutil.copy(checkpoints / "checkpoint_epoch=1.pt", tmp_path / "resumed" / "checkpoints")
    log = train("resumed", resume=True)
    assert "Pseudo-classes at epoch 1" not in log and "Pseudo-classes at epoch 3" in log
    expected = torch.load(tmp_path / "straight_models" / "model.pt", weights_only=True)
    final = torch.load(tmp_path / "resumed_models" / "model.pt", weights_only=True)
    assert final.keys() == expected.keys()
    for key in expected:
        torch.testing.assert_close(final[key], expected[key], rtol=0, atol=0, msg=key)


def test_bundle_rejects_an_unknown_negatives_value(tmp_path) -> None:
    result = subprocess.run(
        bundle_command("training", "train.json", negatives="hard", progress=False, output_dir=str(tmp_path)),
        cwd=REPO_ROOT, capture_output=True, text=True, timeout=300,
    )
    assert result.returncode != 0
    assert "negatives must be one of ('all', 'cluster_aware'), got 'hard'" in result.stdout + result.stderr


def test_reproduction_tables_name_the_variant() -> None:
    from monai_cae.reproduce import aggregate, cae_model_name, cae_variant, main, markdown

    name = cae_model_name("cluster_aware")
    assert cae_model_name("all") == "CAE" and name == "CAE, cluster-aware negatives"
    metrics = {"accuracy": 0.9, "precision_weighted": 0.9, "recall_weighted": 0.9}
    summary = aggregate([{(name, "knn"): {"test": metrics}}])
    table = markdown("pneumoniamnist", summary, seeds=1, minutes=2.0, variant=cae_variant("cluster_aware"))
    assert table.startswith("### pneumoniamnist (cluster-aware negatives): mean ± std over 1 seed(s)")
    assert cae_model_name("cluster_aware", True) == "CAE, cluster-aware negatives, local branch"
    assert cae_model_name("all", True) == "CAE, local branch" and cae_variant() == ""
    assert "| CAE, cluster-aware negatives | knn | 0.900 ± 0.000 |" in table
    with pytest.raises(SystemExit):
        main(["--negatives", "hard"])
