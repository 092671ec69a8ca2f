"""Numerically stable NT-Xent (normalised temperature-scaled cross-entropy) loss."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from monai.utils import LossReduction
from torch.nn.modules.loss import _Loss

__all__ = ["NTXentLoss"]


class NTXentLoss(_Loss):
    """SimCLR's NT-Xent loss over a batch of positive pairs (Chen et al. 2020; Ferrante et al. 2022, Eq. 1).

    For ``2N`` projections (two views of ``N`` images) the loss of view ``i`` is
    ``-log(exp(sim(z_i, z_j) / tau) / sum_{k != i} exp(sim(z_i, z_k) / tau))`` with ``j`` its positive and ``sim`` the
    cosine similarity; the result averages over all ``2N`` views.

    ``monai.losses.ContrastiveLoss`` computes the same quantity with an explicit ``exp``, which overflows and returns
    NaN for temperatures of 0.01 and below. This form feeds the scaled similarities to a log-softmax
    (``cross_entropy``), which subtracts the row maximum, so it stays finite for any positive temperature.

    Args:
        temperature: softmax temperature ``tau``; must be positive.
        reduction: ``"mean"`` (default), ``"sum"`` or ``"none"`` (one value per view, ``(2N,)``).

    Raises:
        ValueError: for a non-positive temperature or an unknown reduction.
    """

    def __init__(self, temperature: float = 0.5, reduction: LossReduction | str = LossReduction.MEAN) -> None:
        super().__init__(reduction=LossReduction(reduction).value)
        if temperature <= 0:
            raise ValueError(f"temperature must be positive, got {temperature}.")
        self.temperature = float(temperature)

    def forward(self, z1: torch.Tensor, z2: torch.Tensor) -> torch.Tensor:
        """Compute the loss.

        Args:
            z1: ``(N, D)`` projections of the first views.
            z2: ``(N, D)`` projections of the second views; row ``i`` is the positive of ``z1[i]``.

        Returns:
            The reduced loss, or ``(2N,)`` per-view losses with ``reduction="none"``.

        Raises:
            ValueError: when the inputs are not matching ``(N, D)`` matrices with ``N >= 2``.
        """
        if z1.ndim != 2 or z1.shape != z2.shape:
            raise ValueError(f"z1 and z2 must be matching (N, D) matrices, got {tuple(z1.shape)} and {tuple(z2.shape)}.")
        n = z1.shape[0]
        if n < 2:
            raise ValueError(f"NT-Xent needs at least 2 pairs to have negatives, got a batch of {n}.")
        z = F.normalize(torch.cat([z1, z2], dim=0), dim=1)
        logits = z @ z.t() / self.temperature
        self_mask = torch.eye(2 * n, dtype=torch.bool, device=z.device)
        logits = logits.masked_fill(self_mask, float("-inf"))
        positives = torch.cat([torch.arange(n, 2 * n), torch.arange(0, n)]).to(z.device)
        return F.cross_entropy(logits, positives, reduction=self.reduction)
