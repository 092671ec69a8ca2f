"""LARS optimizer (layer-wise adaptive rate scaling).

Ferrante et al. 2022, "Contrastive learning for unsupervised medical image clustering and
reconstruction", update all network weights with LARS [You, Gitman, Ginsburg 2017, "Large batch
training of convolutional networks", arXiv:1708.03888]. This module implements Algorithm 1 of
You et al. together with the usual SimCLR practice of excluding biases and normalisation
parameters from the layer-wise adaptation and from weight decay (see :func:`lars_param_groups`).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

import torch
from torch import nn

__all__ = ["LARS", "lars_param_groups"]


class LARS(torch.optim.Optimizer):
    """Layer-wise Adaptive Rate Scaling (You et al. 2017, Algorithm 1).

    For every parameter tensor ``w`` with gradient ``g`` in a group with ``lars_adaptation=True``::

        local_lr = eta * ||w|| / (||g|| + weight_decay * ||w|| + eps)   # 1.0 if ||w|| == 0 or ||g|| == 0
        v        = momentum * v + lr * local_lr * (g + weight_decay * w)
        w        = w - v

    In a group with ``lars_adaptation=False`` the trust ratio and weight decay are both dropped, so
    the group is updated by plain SGD with momentum (``v = momentum * v + lr * g``). This is how
    biases and normalisation parameters are excluded, as in SimCLR; :func:`lars_param_groups`
    builds the two groups.

    With ``nesterov=True`` the last line becomes ``w = w - (momentum * v + lr * local_lr * d)`` with
    ``d = g + weight_decay * w`` (Sutskever et al. 2013).

    Note:
        As in Algorithm 1, the global learning rate is folded into the momentum buffer ``v``. With a
        constant ``lr`` this is identical to :class:`torch.optim.SGD`, which keeps ``lr`` outside the
        buffer; when a scheduler changes ``lr``, the velocity accumulated at earlier learning rates
        is kept rather than rescaled.

    Args:
        params: iterable of parameters or of parameter-group dicts. A group may set ``lr``,
            ``momentum``, ``weight_decay``, ``trust_coefficient``, ``eps``, ``nesterov`` and
            ``lars_adaptation`` to override the defaults below.
        lr: global learning rate, > 0.
        momentum: momentum factor, in [0, 1).
        weight_decay: L2 penalty coefficient, >= 0 (ignored in groups with ``lars_adaptation=False``).
        trust_coefficient: ``eta`` of You et al., > 0; how far one step may move a layer relative to
            its norm.
        eps: added to the trust-ratio denominator for numerical stability, >= 0.
        nesterov: use Nesterov momentum (requires ``momentum > 0``).

    Raises:
        ValueError: if a hyperparameter (default or per-group) is out of range.

    Example::

        optimizer = LARS(lars_param_groups(model, weight_decay=1e-6), lr=0.25)
    """

    def __init__(
        self,
        params: Iterable[torch.Tensor] | Iterable[dict[str, Any]],
        lr: float,
        momentum: float = 0.9,
        weight_decay: float = 0.0,
        trust_coefficient: float = 0.001,
        eps: float = 1e-8,
        nesterov: bool = False,
    ) -> None:
        defaults = {
            "lr": lr,
            "momentum": momentum,
            "weight_decay": weight_decay,
            "trust_coefficient": trust_coefficient,
            "eps": eps,
            "nesterov": nesterov,
            "lars_adaptation": True,
        }
        _validate(defaults)
        super().__init__(params, defaults)

    def add_param_group(self, param_group: dict[str, Any]) -> None:
        """Add a parameter group, filling in defaults and validating its hyperparameters.

        Args:
            param_group: dict with ``params`` and optional per-group hyperparameters.

        Raises:
            ValueError: if a hyperparameter of the group is out of range.
        """
        super().add_param_group(param_group)
        _validate(self.param_groups[-1])

    @torch.no_grad()
    def step(self, closure: Callable[[], float] | None = None) -> float | None:  # type: ignore[override]
        """Perform a single optimisation step.

        Args:
            closure: optional callable that re-evaluates the model and returns the loss.

        Returns:
            The loss returned by ``closure``, or ``None``.

        Raises:
            RuntimeError: for sparse gradients.
        """
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()

        for group in self.param_groups:
            lr, momentum = group["lr"], group["momentum"]
            adapt = group["lars_adaptation"]
            weight_decay = group["weight_decay"] if adapt else 0.0
            for p in group["params"]:
                if p.grad is None:
                    continue
                grad = p.grad
                if grad.is_sparse:
                    raise RuntimeError("LARS does not support sparse gradients.")

                update = grad.add(p, alpha=weight_decay) if weight_decay != 0 else grad.clone()
                if adapt:
                    w_norm = torch.linalg.vector_norm(p)
                    g_norm = torch.linalg.vector_norm(grad)
                    local_lr = group["trust_coefficient"] * w_norm / (g_norm + weight_decay * w_norm + group["eps"])
                    trust_ratio = torch.where((w_norm > 0) & (g_norm > 0), local_lr, torch.ones_like(local_lr))
                    update.mul_(trust_ratio)
                update.mul_(lr)  # lr * local_lr * (g + weight_decay * w)

                if momentum != 0:
                    state = self.state[p]
                    if "momentum_buffer" not in state:
                        state["momentum_buffer"] = torch.zeros_like(p)
                    buf = state["momentum_buffer"]
                    buf.mul_(momentum).add_(update)
                    update = update.add(buf, alpha=momentum) if group["nesterov"] else buf
                p.sub_(update)

        return loss


def _validate(group: dict[str, Any]) -> None:
    """Raise ``ValueError`` naming the first out-of-range hyperparameter of ``group``."""
    if not group["lr"] > 0.0:
        raise ValueError(f"Invalid learning rate: lr={group['lr']} (must be > 0).")
    if not 0.0 <= group["momentum"] < 1.0:
        raise ValueError(f"Invalid momentum: momentum={group['momentum']} (must be in [0, 1)).")
    if not group["weight_decay"] >= 0.0:
        raise ValueError(f"Invalid weight_decay: weight_decay={group['weight_decay']} (must be >= 0).")
    if not group["trust_coefficient"] > 0.0:
        raise ValueError(
            f"Invalid trust_coefficient: trust_coefficient={group['trust_coefficient']} (must be > 0)."
        )
    if not group["eps"] >= 0.0:
        raise ValueError(f"Invalid eps: eps={group['eps']} (must be >= 0).")
    if group["nesterov"] and group["momentum"] == 0:
        raise ValueError(f"Nesterov momentum requires momentum > 0, got momentum={group['momentum']}.")


def lars_param_groups(model: nn.Module, weight_decay: float) -> list[dict[str, Any]]:
    """Split a model's trainable parameters into LARS-adapted weights and excluded parameters.

    Following SimCLR (Chen et al. 2020), weight matrices and convolution kernels (``ndim > 1``) get
    weight decay and the LARS trust ratio, while biases and normalisation scales/shifts
    (``ndim <= 1``, e.g. BatchNorm, GroupNorm, LayerNorm, PReLU) get neither. Parameters with
    ``requires_grad=False`` (e.g. a frozen encoder) are left out. Both groups are always returned,
    possibly with an empty ``params`` list, so the group layout does not depend on the model.

    Args:
        model: the network whose parameters to split.
        weight_decay: weight-decay coefficient for the adapted group, >= 0.

    Returns:
        ``[{"params": weights, "weight_decay": weight_decay, "lars_adaptation": True},
        {"params": others, "weight_decay": 0.0, "lars_adaptation": False}]``, to pass to :class:`LARS`.

    Raises:
        ValueError: if ``weight_decay`` is negative.
    """
    if not weight_decay >= 0.0:
        raise ValueError(f"Invalid weight_decay: weight_decay={weight_decay} (must be >= 0).")
    params = [p for p in model.parameters() if p.requires_grad]
    return [
        {"params": [p for p in params if p.ndim > 1], "weight_decay": weight_decay, "lars_adaptation": True},
        {"params": [p for p in params if p.ndim <= 1], "weight_decay": 0.0, "lars_adaptation": False},
    ]
