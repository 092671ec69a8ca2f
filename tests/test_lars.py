from __future__ import annotations

import copy
import math

import pytest
import torch
from torch import nn

from monai_cae.optimizers import LARS, lars_param_groups


def _reference_lars_step(w, g, v, lr, momentum, weight_decay, eta, nesterov=False, eps=1e-8):
    """You et al. 2017, Algorithm 1, written out in plain float arithmetic on Python lists."""
    w_norm = math.sqrt(sum(x * x for x in w))
    g_norm = math.sqrt(sum(x * x for x in g))
    local_lr = eta * w_norm / (g_norm + weight_decay * w_norm + eps) if w_norm > 0 and g_norm > 0 else 1.0
    update = [lr * local_lr * (gi + weight_decay * wi) for gi, wi in zip(g, w)]
    v = [momentum * vi + ui for vi, ui in zip(v, update)]
    if nesterov:
        w = [wi - (momentum * vi + ui) for wi, vi, ui in zip(w, v, update)]
    else:
        w = [wi - vi for wi, vi in zip(w, v)]
    return w, v


W0 = [0.5, -1.0, 2.0, 0.25, -0.75, 1.5]
GRADS = [[0.1, 0.2, -0.3, 0.05, 0.4, -0.1], [-0.2, 0.3, 0.1, -0.4, 0.0, 0.25]]
COMBOS = [
    # lr, momentum, weight_decay, eta, nesterov
    (0.25, 0.9, 0.0, 0.001, False),
    (0.1, 0.0, 1e-4, 0.001, False),
    (1.0, 0.5, 1e-2, 0.02, False),
    (0.01, 0.99, 1e-6, 1.0, False),
    (0.5, 0.9, 1e-3, 0.01, True),
]


@pytest.mark.parametrize("lr, momentum, weight_decay, eta, nesterov", COMBOS)
def test_two_steps_match_hand_computed(lr, momentum, weight_decay, eta, nesterov):
    p = nn.Parameter(torch.tensor(W0, dtype=torch.float64).reshape(2, 3))
    opt = LARS([p], lr=lr, momentum=momentum, weight_decay=weight_decay, trust_coefficient=eta, nesterov=nesterov)
    w_ref, v_ref = list(W0), [0.0] * len(W0)
    for g in GRADS:  # the second step checks momentum accumulation
        p.grad = torch.tensor(g, dtype=torch.float64).reshape(2, 3)
        opt.step()
        w_ref, v_ref = _reference_lars_step(w_ref, g, v_ref, lr, momentum, weight_decay, eta, nesterov)
        close = dict(rtol=1e-12, atol=1e-14)
        torch.testing.assert_close(p.detach().flatten(), torch.tensor(w_ref, dtype=torch.float64), **close)
        if momentum != 0:
            buf = opt.state[p]["momentum_buffer"].flatten()
            torch.testing.assert_close(buf, torch.tensor(v_ref, dtype=torch.float64), **close)


def test_trust_ratio_value():
    # w = [3, 4] (norm 5), g = [0, 1] (norm 1), wd = 0.1, eta = 0.01:
    # local_lr = 0.01 * 5 / (1 + 0.1 * 5) = 1/30; v = 0.5 * (1/30) * ([0, 1] + 0.1 * [3, 4]) = [0.005, 7/300]
    p = nn.Parameter(torch.tensor([[3.0, 4.0]], dtype=torch.float64))
    p.grad = torch.tensor([[0.0, 1.0]], dtype=torch.float64)
    LARS([p], lr=0.5, momentum=0.9, weight_decay=0.1, trust_coefficient=0.01, eps=0.0).step()
    torch.testing.assert_close(p.detach(), torch.tensor([[3.0 - 0.005, 4.0 - 7.0 / 300.0]], dtype=torch.float64))


@pytest.mark.parametrize(
    "lr, momentum, nesterov", [(0.1, 0.9, False), (0.5, 0.0, False), (0.03, 0.5, False), (0.1, 0.9, True)]
)
def test_excluded_group_equals_sgd(lr, momentum, nesterov):
    torch.manual_seed(0)
    p_lars = nn.Parameter(torch.randn(5, dtype=torch.float64))
    p_sgd = nn.Parameter(p_lars.detach().clone())
    # weight_decay and eta are set but must be ignored by the excluded group
    lars = LARS(
        [{"params": [p_lars], "lars_adaptation": False}],
        lr=lr,
        momentum=momentum,
        weight_decay=0.1,
        trust_coefficient=0.001,
        nesterov=nesterov,
    )
    sgd = torch.optim.SGD([p_sgd], lr=lr, momentum=momentum, nesterov=nesterov)
    for _ in range(5):
        g = torch.randn(5, dtype=torch.float64)
        p_lars.grad, p_sgd.grad = g.clone(), g.clone()
        lars.step()
        sgd.step()
        torch.testing.assert_close(p_lars.detach(), p_sgd.detach(), rtol=1e-12, atol=1e-14)


@pytest.mark.parametrize("w, g", [([0.0, 0.0], [0.3, -0.4]), ([1.0, 2.0], [0.0, 0.0])])
def test_zero_norm_uses_trust_ratio_one(w, g):
    # trust ratio 1 and no weight decay (w = 0 or wd = 0): the step is plain SGD, w - lr * g
    p = nn.Parameter(torch.tensor([w], dtype=torch.float64))
    p.grad = torch.tensor([g], dtype=torch.float64)
    LARS([p], lr=0.5, momentum=0.9, trust_coefficient=0.001).step()
    expected = torch.tensor([w], dtype=torch.float64) - 0.5 * torch.tensor([g], dtype=torch.float64)
    torch.testing.assert_close(p.detach(), expected)


def test_zero_grad_with_weight_decay_uses_trust_ratio_one():
    p = nn.Parameter(torch.tensor([[1.0, 2.0]], dtype=torch.float64))
    p.grad = torch.zeros_like(p)
    LARS([p], lr=0.5, weight_decay=0.1).step()
    torch.testing.assert_close(p.detach(), torch.tensor([[1.0, 2.0]], dtype=torch.float64) * (1 - 0.5 * 0.1))


def test_params_without_grad_are_skipped():
    a = nn.Parameter(torch.ones(2, 2))
    b = nn.Parameter(torch.ones(2, 2))
    a.grad = torch.full((2, 2), 0.5)
    opt = LARS([a, b], lr=0.1)
    opt.step()
    assert torch.equal(b.detach(), torch.ones(2, 2))
    assert b not in opt.state
    assert not torch.equal(a.detach(), torch.ones(2, 2))


def test_closure_returns_loss():
    p = nn.Parameter(torch.ones(2, 2))
    opt = LARS([p], lr=0.1)

    def closure():
        opt.zero_grad()
        loss = (p**2).sum()
        loss.backward()
        return loss

    loss = opt.step(closure)
    assert loss.item() == pytest.approx(4.0)
    assert p.grad is not None and (p.detach() < 1).all()


@pytest.mark.parametrize("lr, eta", [(1.0, 0.02), (10.0, 0.002)])
def test_minimises_logistic_regression(lr, eta):
    torch.manual_seed(0)
    x = torch.randn(256, 8)
    y = (x @ torch.randn(8) > 0).float()
    model = nn.Linear(8, 1)
    opt = LARS(lars_param_groups(model, weight_decay=1e-6), lr=lr, trust_coefficient=eta)
    loss_fn = nn.BCEWithLogitsLoss()
    initial = loss_fn(model(x).squeeze(1), y).item()
    for _ in range(300):
        opt.zero_grad()
        loss = loss_fn(model(x).squeeze(1), y)
        loss.backward()
        opt.step()
    final = loss_fn(model(x).squeeze(1), y).item()
    assert final < initial / 50


def test_minimises_least_squares():
    torch.manual_seed(0)
    a = torch.randn(64, 4, dtype=torch.float64)
    w_true = torch.randn(4, 1, dtype=torch.float64)
    b = a @ w_true
    w = nn.Parameter(torch.randn(4, 1, dtype=torch.float64))
    opt = LARS([w], lr=5.0, momentum=0.9, trust_coefficient=0.01)
    initial = ((a @ w - b) ** 2).mean().item()
    for _ in range(300):
        opt.zero_grad()
        loss = ((a @ w - b) ** 2).mean()
        loss.backward()
        opt.step()
    assert loss.item() < initial / 100


class _SmallNet(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(1, 4, 3)  # weight (4,1,3,3), bias (4,)
        self.bn = nn.BatchNorm2d(4)  # weight (4,), bias (4,)
        self.fc = nn.Linear(4, 2)  # weight (2,4), bias (2,)
        self.frozen = nn.Linear(2, 2)  # excluded entirely
        for p in self.frozen.parameters():
            p.requires_grad_(False)


def test_lars_param_groups_split():
    model = _SmallNet()
    groups = lars_param_groups(model, weight_decay=1e-6)
    assert len(groups) == 2
    adapted, excluded = groups
    assert adapted["lars_adaptation"] is True and adapted["weight_decay"] == 1e-6
    assert excluded["lars_adaptation"] is False and excluded["weight_decay"] == 0.0
    ids = lambda ps: {id(p) for p in ps}  # noqa: E731
    assert ids(adapted["params"]) == ids([model.conv.weight, model.fc.weight])
    assert ids(excluded["params"]) == ids([model.conv.bias, model.bn.weight, model.bn.bias, model.fc.bias])
    assert sum(p.numel() for g in groups for p in g["params"]) == sum(
        p.numel() for p in model.parameters() if p.requires_grad
    )
    opt = LARS(groups, lr=0.1)
    assert [g["lars_adaptation"] for g in opt.param_groups] == [True, False]
    assert [g["weight_decay"] for g in opt.param_groups] == [1e-6, 0.0]


def test_lars_param_groups_bad_weight_decay():
    with pytest.raises(ValueError, match="weight_decay=-1"):
        lars_param_groups(nn.Linear(2, 2), weight_decay=-1.0)


def _train(model, opt, steps, seed):
    gen = torch.Generator().manual_seed(seed)
    for _ in range(steps):
        x = torch.randn(8, 4, generator=gen)
        opt.zero_grad()
        model(x).pow(2).mean().backward()
        opt.step()


def test_state_dict_round_trip():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 8), nn.BatchNorm1d(8), nn.Linear(8, 2))
    opt = LARS(lars_param_groups(model, weight_decay=1e-4), lr=0.5, trust_coefficient=0.01)
    _train(model, opt, steps=3, seed=1)

    model2 = copy.deepcopy(model)
    opt2 = LARS(lars_param_groups(model2, weight_decay=1e-4), lr=0.5, trust_coefficient=0.01)
    opt2.load_state_dict(copy.deepcopy(opt.state_dict()))
    assert all("momentum_buffer" in opt2.state[p] for p in model2.parameters())

    _train(model, opt, steps=3, seed=2)
    _train(model2, opt2, steps=3, seed=2)
    for p, p2 in zip(model.parameters(), model2.parameters()):
        torch.testing.assert_close(p, p2, rtol=0, atol=0)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"lr": 0.0}, "lr=0.0"),
        ({"lr": -0.1}, "lr=-0.1"),
        ({"lr": 0.1, "momentum": -0.1}, "momentum=-0.1"),
        ({"lr": 0.1, "momentum": 1.0}, "momentum=1.0"),
        ({"lr": 0.1, "weight_decay": -1e-4}, "weight_decay=-0.0001"),
        ({"lr": 0.1, "trust_coefficient": 0.0}, "trust_coefficient=0.0"),
        ({"lr": 0.1, "eps": -1.0}, "eps=-1.0"),
        ({"lr": 0.1, "momentum": 0.0, "nesterov": True}, "momentum=0.0"),
    ],
)
def test_bad_args(kwargs, match):
    with pytest.raises(ValueError, match=match):
        LARS([nn.Parameter(torch.ones(2, 2))], **kwargs)


def test_bad_group_args():
    with pytest.raises(ValueError, match="lr=-1"):
        LARS([{"params": [nn.Parameter(torch.ones(2, 2))], "lr": -1.0}], lr=0.1)
