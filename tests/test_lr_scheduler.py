from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from monai_cae.optimizers import LARS, LinearWarmupCosineAnnealingLR


def _reference_lr(step, warmup, total, start, peak, end):
    """The schedule written out independently of the implementation."""
    if step < warmup:
        return start + (peak - start) * step / warmup
    if step >= total:
        return end
    return end + 0.5 * (peak - end) * (1 + math.cos(math.pi * (step - warmup) / (total - warmup)))


def _optimizer(lr=0.25, extra_lrs=(), cls=LARS):
    groups = [{"params": [nn.Parameter(torch.ones(2, 2))], "lr": lr}]
    groups += [{"params": [nn.Parameter(torch.ones(2, 2))], "lr": x} for x in extra_lrs]
    return cls(groups, lr=lr)


def _lrs(optimizer, scheduler, steps, group=0):
    out = []
    for _ in range(steps):
        out.append(optimizer.param_groups[group]["lr"])
        optimizer.step()
        scheduler.step()
    return out


def _published(optimizer, **kwargs):
    return LinearWarmupCosineAnnealingLR(
        optimizer, warmup_steps=10, total_steps=100, warmup_start_lr=0.01, end_lr=0.05, **kwargs
    )


def test_published_schedule_values():
    opt = _optimizer(0.25)
    lrs = _lrs(opt, _published(opt), 121)
    assert lrs[0] == pytest.approx(0.01)
    assert lrs[5] == pytest.approx(0.13)  # halfway through warm-up: 0.01 + 0.5 * 0.24
    assert lrs[10] == pytest.approx(0.25)
    assert lrs[55] == pytest.approx(0.15)  # 0.05 + 0.5 * (0.25 - 0.05) * (1 + cos(pi / 2))
    assert lrs[100] == pytest.approx(0.05)
    assert lrs[120] == pytest.approx(0.05)  # constant after total_steps
    for step, lr in enumerate(lrs):
        assert lr == pytest.approx(_reference_lr(step, 10, 100, 0.01, 0.25, 0.05), abs=1e-12)
    # monotone up during warm-up, monotone down during annealing
    assert all(a < b for a, b in zip(lrs[:10], lrs[1:11]))
    assert all(a > b for a, b in zip(lrs[10:100], lrs[11:101]))


@pytest.mark.filterwarnings("ignore:`torch.jit:DeprecationWarning")  # raised while monai imports its networks
def test_published_schedule_differs_from_monai_warmup_cosine():
    """monai's WarmupCosineSchedule floors a cosine that decays to 0, so it cannot anneal to 0.05 at epoch 100."""
    from monai.optimizers import WarmupCosineSchedule

    opt = _optimizer(0.25)
    lrs = _lrs(opt, WarmupCosineSchedule(opt, warmup_steps=10, t_total=100, end_lr=0.05, warmup_multiplier=0.04), 101)
    assert lrs[55] == pytest.approx(0.125)  # not 0.15
    assert lrs[80] == pytest.approx(0.05)  # already on the floor long before epoch 100


@pytest.mark.parametrize(
    "warmup, total, start, peak, end",
    [(10, 100, 0.01, 0.25, 0.05), (0, 20, 0.0, 1.0, 0.0), (5, 5, 0.0, 0.1, 0.01), (3, 50, 0.2, 0.1, 0.3)],
)
def test_matches_reference(warmup, total, start, peak, end):
    opt = _optimizer(peak)
    sched = LinearWarmupCosineAnnealingLR(opt, warmup, total, warmup_start_lr=start, end_lr=end)
    lrs = _lrs(opt, sched, total + 5)
    expected = [_reference_lr(s, warmup, total, start, peak, end) for s in range(total + 5)]
    assert lrs == pytest.approx(expected, abs=1e-12)
    assert sched.get_last_lr()[0] == pytest.approx(end)


def test_no_warmup_starts_at_peak():
    opt = _optimizer(0.25)
    lrs = _lrs(opt, LinearWarmupCosineAnnealingLR(opt, 0, 10, end_lr=0.05), 11)
    assert lrs[0] == pytest.approx(0.25)
    assert lrs[5] == pytest.approx(0.15)
    assert lrs[10] == pytest.approx(0.05)


def test_per_group_peaks_share_absolute_start_and_end():
    opt = _optimizer(0.25, extra_lrs=(0.5, 0.0), cls=torch.optim.SGD)  # LARS rejects lr=0
    sched = _published(opt)
    for step in range(101):
        expected = [_reference_lr(step, 10, 100, 0.01, p, 0.05) for p in (0.25, 0.5)] + [0.0]
        assert [g["lr"] for g in opt.param_groups] == pytest.approx(expected, abs=1e-12)
        opt.step()
        sched.step()


def test_state_dict_resume():
    opt = _optimizer(0.25)
    sched = _published(opt)
    _lrs(opt, sched, 37)
    state = sched.state_dict()
    expected = _lrs(opt, sched, 40)

    opt2 = _optimizer(0.25)
    sched2 = _published(opt2)
    sched2.load_state_dict(state)
    # the optimizer's lr is restored by the optimizer's own state dict; emulate that here
    for g, lr in zip(opt2.param_groups, sched2.get_last_lr()):
        g["lr"] = lr
    assert sched2.last_epoch == 37
    assert _lrs(opt2, sched2, 40) == pytest.approx(expected, abs=1e-12)


def test_resume_with_last_epoch():
    opt = _optimizer(0.25)
    sched = _published(opt)
    _lrs(opt, sched, 20)
    expected = _lrs(opt, sched, 10)

    opt2 = _optimizer(0.25)
    for g in opt2.param_groups:
        g["initial_lr"] = 0.25
    sched2 = _published(opt2, last_epoch=19)
    assert _lrs(opt2, sched2, 10) == pytest.approx(expected, abs=1e-12)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"warmup_steps": 0, "total_steps": 0}, "total_steps=0"),
        ({"warmup_steps": -1, "total_steps": 10}, "warmup_steps=-1"),
        ({"warmup_steps": 11, "total_steps": 10}, "warmup_steps=11"),
        ({"warmup_steps": 1, "total_steps": 10, "warmup_start_lr": -0.01}, "warmup_start_lr=-0.01"),
        ({"warmup_steps": 1, "total_steps": 10, "end_lr": -0.5}, "end_lr=-0.5"),
    ],
)
def test_bad_args(kwargs, match):
    with pytest.raises(ValueError, match=match):
        LinearWarmupCosineAnnealingLR(_optimizer(), **kwargs)
