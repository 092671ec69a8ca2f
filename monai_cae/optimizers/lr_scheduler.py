"""Linear warm-up followed by cosine annealing to a non-zero final learning rate.

Ferrante et al. 2022, "Contrastive learning for unsupervised medical image clustering and
reconstruction", train with "a scheduler that linearly increases the learning rate from lr=0.01 to
0.25 (first 10 epochs), after which a cosine annealing scheduler reduces the learning rate to 0.05
in 90 epochs". :class:`LinearWarmupCosineAnnealingLR` expresses exactly that schedule.
"""

from __future__ import annotations

import math

from torch.optim import Optimizer
from torch.optim.lr_scheduler import LambdaLR

__all__ = ["LinearWarmupCosineAnnealingLR"]


class LinearWarmupCosineAnnealingLR(LambdaLR):
    """Linear warm-up from ``warmup_start_lr`` to the peak, then cosine annealing to ``end_lr``.

    The peak learning rate of each parameter group is its initial ``lr`` (``base_lrs``).
    ``warmup_start_lr`` and ``end_lr`` are *absolute* learning rates shared by all groups. With
    ``W = warmup_steps``, ``T = total_steps`` and ``peak`` the group's initial lr, the learning rate
    after ``step`` calls to :meth:`step` is::

        step <  W:       warmup_start_lr + (peak - warmup_start_lr) * step / W
        W <= step < T:   end_lr + 0.5 * (peak - end_lr) * (1 + cos(pi * (step - W) / (T - W)))
        step >= T:       end_lr

    so it equals ``warmup_start_lr`` at step 0, ``peak`` at step ``W`` and ``end_lr`` at step ``T``
    and afterwards. A group whose initial lr is 0 (e.g. a frozen part) stays at 0.

    Steps are counted in whatever unit the caller calls :meth:`step` in: call it once per epoch
    with ``warmup_steps``/``total_steps`` in epochs, or once per iteration with them in iterations.
    The published schedule (Ferrante et al. 2022) with one ``step()`` per epoch is::

        optimizer = LARS(params, lr=0.25)
        scheduler = LinearWarmupCosineAnnealingLR(
            optimizer, warmup_steps=10, total_steps=100, warmup_start_lr=0.01, end_lr=0.05
        )

    Note:
        :class:`monai.optimizers.WarmupCosineSchedule` cannot express this schedule: its cosine
        decays the peak towards 0 and ``end_lr`` is only a floor (``max(end_lr, lr)``), so with a
        peak of 0.25 and ``end_lr=0.05`` it hits 0.05 about 70% of the way through the annealing
        phase (epoch ~73 of 100) and stays flat, instead of annealing to 0.05 exactly at the last
        epoch (at epoch 55 it gives 0.125 instead of 0.15).

    Args:
        optimizer: wrapped optimizer; each group's initial ``lr`` is its peak learning rate.
        warmup_steps: length of the linear warm-up, ``0 <= warmup_steps <= total_steps``
            (0 starts the cosine phase at the peak immediately).
        total_steps: step at which ``end_lr`` is reached, > 0.
        warmup_start_lr: absolute learning rate at step 0, >= 0.
        end_lr: absolute learning rate at ``total_steps`` and after, >= 0.
        last_epoch: index of the last step taken, for resuming; -1 starts a new schedule.

    Raises:
        ValueError: if the step counts or learning rates are out of range.
    """

    def __init__(
        self,
        optimizer: Optimizer,
        warmup_steps: int,
        total_steps: int,
        warmup_start_lr: float = 0.0,
        end_lr: float = 0.0,
        last_epoch: int = -1,
    ) -> None:
        if not total_steps > 0:
            raise ValueError(f"Invalid total_steps: total_steps={total_steps} (must be > 0).")
        if not 0 <= warmup_steps <= total_steps:
            raise ValueError(
                f"Invalid warmup_steps: warmup_steps={warmup_steps} (must be in [0, total_steps={total_steps}])."
            )
        if not warmup_start_lr >= 0.0:
            raise ValueError(f"Invalid warmup_start_lr: warmup_start_lr={warmup_start_lr} (must be >= 0).")
        if not end_lr >= 0.0:
            raise ValueError(f"Invalid end_lr: end_lr={end_lr} (must be >= 0).")
        self.warmup_steps = warmup_steps
        self.total_steps = total_steps
        self.warmup_start_lr = warmup_start_lr
        self.end_lr = end_lr
        # One multiplier per group; base_lrs is set by the parent before the multipliers are first used.
        lr_lambdas = [lambda step, idx=idx: self._multiplier(step, idx) for idx in range(len(optimizer.param_groups))]
        super().__init__(optimizer, lr_lambdas, last_epoch)

    def lr_at(self, step: int, peak_lr: float) -> float:
        """Absolute learning rate of the schedule at ``step`` for a group whose peak lr is ``peak_lr``.

        Args:
            step: number of :meth:`step` calls taken (``last_epoch``).
            peak_lr: the group's initial learning rate.

        Returns:
            The learning rate at ``step``.
        """
        if step < self.warmup_steps:
            return self.warmup_start_lr + (peak_lr - self.warmup_start_lr) * step / self.warmup_steps
        if step >= self.total_steps:
            return self.end_lr
        progress = (step - self.warmup_steps) / (self.total_steps - self.warmup_steps)
        return self.end_lr + 0.5 * (peak_lr - self.end_lr) * (1.0 + math.cos(math.pi * progress))

    def _multiplier(self, step: int, idx: int) -> float:
        peak_lr = self.base_lrs[idx]
        return self.lr_at(step, peak_lr) / peak_lr if peak_lr > 0 else 0.0
