from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from monai.losses import ContrastiveLoss

from monai_cae.losses import CAELoss, NTXentLoss


def reference_ntxent(z1: torch.Tensor, z2: torch.Tensor, temperature: float) -> torch.Tensor:
    """Eq. 1 of the paper written term by term in float64, with log-sum-exp done by hand."""
    z = torch.cat([z1, z2]).double()
    z = z / z.norm(dim=1, keepdim=True)
    n = z1.shape[0]
    losses = []
    for i in range(2 * n):
        j = (i + n) % (2 * n)
        logits = [float(z[i] @ z[k]) / temperature for k in range(2 * n) if k != i]
        peak = max(logits)
        log_denominator = peak + math.log(sum(math.exp(v - peak) for v in logits))
        losses.append(log_denominator - float(z[i] @ z[j]) / temperature)
    return torch.tensor(losses, dtype=torch.float64)


@pytest.mark.parametrize("batch", [2, 5, 16])
@pytest.mark.parametrize("dim", [3, 64])
@pytest.mark.parametrize("temperature", [1.0, 0.5, 0.1, 0.01, 0.001])
def test_ntxent_matches_reference(batch: int, dim: int, temperature: float) -> None:
    torch.manual_seed(batch * dim)
    z1, z2 = torch.randn(batch, dim), torch.randn(batch, dim)
    expected = reference_ntxent(z1, z2, temperature)
    per_view = NTXentLoss(temperature, reduction="none")(z1, z2)
    assert torch.isfinite(per_view).all()
    torch.testing.assert_close(per_view.double(), expected, rtol=1e-4, atol=1e-3)
    torch.testing.assert_close(NTXentLoss(temperature)(z1, z2).double(), expected.mean(), rtol=1e-4, atol=1e-3)


@pytest.mark.parametrize("temperature", [1.0, 0.5, 0.1])
def test_ntxent_agrees_with_monai_where_monai_is_finite(temperature: float) -> None:
    z1, z2 = torch.randn(12, 32), torch.randn(12, 32)
    torch.testing.assert_close(NTXentLoss(temperature)(z1, z2), ContrastiveLoss(temperature=temperature)(z1, z2))


def test_ntxent_is_finite_where_monai_is_not() -> None:
    z1 = torch.randn(8, 16)
    z2 = z1 + 0.01 * torch.randn(8, 16)
    assert torch.isnan(ContrastiveLoss(temperature=0.001)(z1, z2))
    assert torch.isfinite(NTXentLoss(0.001)(z1, z2))


def test_hand_computed_two_pairs() -> None:
    # orthogonal unit vectors: positives identical, every negative orthogonal
    z1 = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    z2 = z1.clone()
    tau = 0.5
    # each view: positive sim 1, negatives: the other image's two views (sim 0) -> -log(e^2 / (e^2 + 2))
    expected = -math.log(math.exp(1 / tau) / (math.exp(1 / tau) + 2))
    assert NTXentLoss(tau)(z1, z2).item() == pytest.approx(expected, rel=1e-6)


@pytest.mark.parametrize("temperature", [0.5, 0.01])
def test_ntxent_gradients_match_reference(temperature: float) -> None:
    torch.manual_seed(1)
    z1 = torch.randn(6, 8, dtype=torch.float64, requires_grad=True)
    z2 = torch.randn(6, 8, dtype=torch.float64, requires_grad=True)
    NTXentLoss(temperature)(z1, z2).backward()
    ours = (z1.grad.clone(), z2.grad.clone())
    z1.grad = z2.grad = None

    def autograd_reference(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        z = F.normalize(torch.cat([a, b]), dim=1)
        sim = z @ z.t() / temperature
        n = a.shape[0]
        total = torch.zeros((), dtype=torch.float64)
        for i in range(2 * n):
            others = torch.cat([sim[i, :i], sim[i, i + 1 :]])
            total = total + torch.logsumexp(others, 0) - sim[i, (i + n) % (2 * n)]
        return total / (2 * n)

    autograd_reference(z1, z2).backward()
    torch.testing.assert_close(ours[0], z1.grad)
    torch.testing.assert_close(ours[1], z2.grad)
    assert torch.isfinite(ours[0]).all()


def test_ntxent_falls_when_views_align() -> None:
    z1 = torch.randn(16, 8)
    aligned = NTXentLoss(0.1)(z1, z1 + 1e-3 * torch.randn(16, 8))
    random = NTXentLoss(0.1)(z1, torch.randn(16, 8))
    assert aligned < random


@pytest.mark.parametrize(
    "args,shapes",
    [({"temperature": 0.0}, None), ({"temperature": -1.0}, None), ({}, ((4, 3), (5, 3))), ({}, ((1, 3), (1, 3)))],
)
def test_ntxent_rejects_bad_input(args: dict, shapes) -> None:
    with pytest.raises(ValueError):
        loss = NTXentLoss(**args)
        loss(torch.zeros(shapes[0]), torch.zeros(shapes[1]))


@pytest.mark.parametrize("alpha", [0.0, 0.1, 1.0])
def test_cae_loss_combines_parts(alpha: float) -> None:
    torch.manual_seed(2)
    z1, z2 = torch.randn(4, 8), torch.randn(4, 8)
    x1, x2 = torch.rand(4, 1, 28, 28), torch.rand(4, 1, 28, 28)
    y1, y2 = torch.rand(4, 1, 28, 28), torch.rand(4, 1, 28, 28)
    parts = CAELoss(temperature=0.2, alpha=alpha)(z1, z2, x1, y1, x2, y2)
    expected_recon = ((x1 - y1) ** 2).mean() + ((x2 - y2) ** 2).mean()
    torch.testing.assert_close(parts["reconstruction"], expected_recon)
    torch.testing.assert_close(parts["contrastive"], NTXentLoss(0.2)(z1, z2))
    torch.testing.assert_close(parts["total"], parts["contrastive"] + alpha * expected_recon)


def test_cae_loss_rejects_bad_arguments() -> None:
    with pytest.raises(ValueError, match="alpha"):
        CAELoss(alpha=-0.1)
    x = torch.rand(2, 1, 8, 8)
    with pytest.raises(ValueError, match="reconstruction shape"):
        CAELoss()(torch.randn(2, 4), torch.randn(2, 4), x, torch.rand(2, 1, 9, 8), x, x)
