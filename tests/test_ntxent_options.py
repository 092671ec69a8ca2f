"""NT-Xent's larger-negative-set options: gathering across ranks (single-process behaviour) and the negative queue."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from monai_cae.losses import CAELoss, NTXentLoss


def reference_queue_ntxent(
    z1: torch.Tensor, z2: torch.Tensor, queue: list[torch.Tensor], temperature: float
) -> torch.Tensor:
    """Per-view NT-Xent with extra negatives, term by term in float64 with a hand-written log-sum-exp."""
    z = torch.cat([z1, z2]).double()
    z = z / z.norm(dim=1, keepdim=True)
    negatives = [q.double() / q.double().norm() for q in queue]
    n = z1.shape[0]
    losses = []
    for i in range(2 * n):
        logits = [float(z[i] @ z[k]) / temperature for k in range(2 * n) if k != i]
        logits += [float(z[i] @ q) / temperature for q in negatives]
        peak = max(logits)
        log_denominator = peak + math.log(sum(math.exp(v - peak) for v in logits))
        losses.append(log_denominator - float(z[i] @ z[(i + n) % (2 * n)]) / temperature)
    return torch.tensor(losses, dtype=torch.float64)


def test_gather_without_process_group_is_the_plain_loss() -> None:
    torch.manual_seed(0)
    z1 = torch.randn(6, 8, dtype=torch.float64, requires_grad=True)
    z2 = torch.randn(6, 8, dtype=torch.float64, requires_grad=True)
    plain = NTXentLoss(0.2)(z1, z2)
    expected = torch.autograd.grad(plain, (z1, z2))
    gathered = NTXentLoss(0.2, gather_distributed=True)(z1, z2)
    got = torch.autograd.grad(gathered, (z1, z2))
    torch.testing.assert_close(gathered, plain, rtol=0, atol=1e-12)
    for a, b in zip(got, expected):
        torch.testing.assert_close(a, b, rtol=0, atol=1e-12)


@pytest.mark.parametrize("queue_size", [3, 8, 100])
@pytest.mark.parametrize("temperature", [0.5, 0.01])
def test_queue_matches_reference_over_several_steps(queue_size: int, temperature: float) -> None:
    torch.manual_seed(queue_size)
    loss = NTXentLoss(temperature, reduction="none", queue_size=queue_size)
    queue: list[torch.Tensor] = []
    for _ in range(4):
        z1, z2 = torch.randn(4, 5), torch.randn(4, 5)
        per_view = loss(z1, z2)
        assert torch.isfinite(per_view).all()
        torch.testing.assert_close(
            per_view.double(), reference_queue_ntxent(z1, z2, queue, temperature), rtol=1e-4, atol=1e-3
        )
        queue = (queue + list(z1))[-queue_size:]
    assert len(loss.queue) == min(queue_size, 16)


def test_queue_gradients_match_autograd_reference() -> None:
    torch.manual_seed(3)
    temperature = 0.1
    queued = torch.randn(7, 8, dtype=torch.float64)
    loss = NTXentLoss(temperature, queue_size=7)
    loss.queue = F.normalize(queued, dim=1)
    z1 = torch.randn(5, 8, dtype=torch.float64, requires_grad=True)
    z2 = torch.randn(5, 8, dtype=torch.float64, requires_grad=True)
    ours = torch.autograd.grad(loss(z1, z2), (z1, z2))

    z = F.normalize(torch.cat([z1, z2]), dim=1)
    q = F.normalize(queued, dim=1)
    total = torch.zeros((), dtype=torch.float64)
    for i in range(10):
        others = torch.cat([z[i] @ torch.cat([z[:i], z[i + 1 :]]).t(), z[i] @ q.t()]) / temperature
        total = total + torch.logsumexp(others, 0) - z[i] @ z[(i + 5) % 10] / temperature
    expected = torch.autograd.grad(total / 10, (z1, z2))
    for a, b in zip(ours, expected):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-12)


def test_queue_keeps_the_latest_normalised_detached_first_views() -> None:
    loss = NTXentLoss(0.5, queue_size=5)
    batches = [torch.randn(3, 4, requires_grad=True) for _ in range(3)]
    for z1 in batches:
        loss(z1, torch.randn(3, 4))
    expected = F.normalize(torch.cat(batches).detach(), dim=1)[-5:]
    torch.testing.assert_close(loss.queue, expected)
    assert not loss.queue.requires_grad and loss.queue.grad_fn is None


def test_queue_does_not_grow_in_eval_mode_nor_when_disabled() -> None:
    loss = NTXentLoss(0.5, queue_size=4).eval()
    loss(torch.randn(3, 4), torch.randn(3, 4))
    assert loss.queue.numel() == 0
    plain = NTXentLoss(0.5)
    plain(torch.randn(3, 4), torch.randn(3, 4))
    assert plain.queue.numel() == 0


def test_queue_is_saved_and_restored_with_the_state_dict() -> None:
    trained = CAELoss(0.5, queue_size=6)
    images = torch.zeros(3, 1, 4, 4)
    trained(torch.randn(3, 4), torch.randn(3, 4), images, images, images, images)
    restored = CAELoss(0.5, queue_size=6)
    restored.load_state_dict(trained.state_dict())
    torch.testing.assert_close(restored.contrastive.queue, trained.contrastive.queue)
    z1, z2 = torch.randn(3, 4), torch.randn(3, 4)
    torch.testing.assert_close(
        restored(z1, z2, images, images, images, images)["contrastive"],
        trained(z1, z2, images, images, images, images)["contrastive"],
    )
    restored.contrastive.reset_queue()
    assert restored.contrastive.queue.numel() == 0


def test_cae_loss_passes_the_options_on() -> None:
    loss = CAELoss(0.3, 0.1, gather_distributed=True, queue_size=9)
    assert loss.contrastive.gather_distributed and loss.contrastive.queue_size == 9
    assert loss.contrastive.temperature == pytest.approx(0.3)


def test_invalid_queue_settings_fail_clearly() -> None:
    with pytest.raises(ValueError, match="queue_size must be non-negative, got -1"):
        NTXentLoss(queue_size=-1)
    loss = NTXentLoss(queue_size=4)
    loss(torch.randn(3, 4), torch.randn(3, 4))
    with pytest.raises(ValueError, match="projections have size 6, the queued ones 4"):
        loss(torch.randn(3, 6), torch.randn(3, 6))
