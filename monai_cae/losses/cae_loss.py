"""The combined contrastive autoencoder loss of the warm-up phase."""

from __future__ import annotations

import torch
from torch import nn

from .ntxent import NTXentLoss

__all__ = ["CAELoss"]


class CAELoss(nn.Module):
    """``L = NT-Xent(z1, z2; tau) + alpha * (MSE(x1, y1) + MSE(x2, y2))`` (Ferrante et al. 2022, Eq. 2, Alg. 1).

    Args:
        temperature: NT-Xent temperature ``tau``.
        alpha: weight of the reconstruction term; 0.1 in the paper.
        gather_distributed: NT-Xent negatives from every rank's batch, so that the effective batch is the global one
            (see :class:`NTXentLoss`).
        queue_size: length of NT-Xent's queue of negatives from earlier batches; 0 disables it
            (see :class:`NTXentLoss`).

    Raises:
        ValueError: for a non-positive temperature, a negative ``alpha`` or a negative ``queue_size``.
    """

    def __init__(
        self, temperature: float = 0.5, alpha: float = 0.1, gather_distributed: bool = False, queue_size: int = 0
    ) -> None:
        super().__init__()
        if alpha < 0:
            raise ValueError(f"alpha must be non-negative, got {alpha}.")
        self.alpha = float(alpha)
        self.contrastive = NTXentLoss(temperature, gather_distributed=gather_distributed, queue_size=queue_size)
        self.reconstruction = nn.MSELoss()

    def forward(
        self,
        z1: torch.Tensor,
        z2: torch.Tensor,
        x1: torch.Tensor,
        y1: torch.Tensor,
        x2: torch.Tensor,
        y2: torch.Tensor,
        pseudo_labels: torch.Tensor | None = None,
    ) -> dict[str, torch.Tensor]:
        """Compute the loss and its parts.

        Args:
            z1: ``(N, D)`` projections of the first views.
            z2: ``(N, D)`` projections of the second views.
            x1: first views (the reconstruction targets).
            y1: reconstructions of the first views.
            x2: second views.
            y2: reconstructions of the second views.
            pseudo_labels: optional ``(N,)`` pseudo-class per image, for cluster-aware negatives (no negative from
                the anchor's own pseudo-class, see :class:`NTXentLoss`).

        Returns:
            ``{"contrastive", "reconstruction", "total"}``: scalar tensors, where ``reconstruction`` is the unweighted
            sum of the two MSEs and ``total = contrastive + alpha * reconstruction``.

        Raises:
            ValueError: when a reconstruction does not match its target's shape.
        """
        for target, recon in ((x1, y1), (x2, y2)):
            if target.shape != recon.shape:
                raise ValueError(f"reconstruction shape {tuple(recon.shape)} differs from input {tuple(target.shape)}.")
        contrastive = self.contrastive(z1, z2, pseudo_labels)
        reconstruction = self.reconstruction(y1, x1) + self.reconstruction(y2, x2)
        return {
            "contrastive": contrastive,
            "reconstruction": reconstruction,
            "total": contrastive + self.alpha * reconstruction,
        }
