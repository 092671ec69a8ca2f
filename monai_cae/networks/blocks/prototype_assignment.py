"""Soft assignment of latent vectors to cluster prototypes."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["PrototypeAssignment"]


class PrototypeAssignment(nn.Module):
    """Temperature-scaled softmax of cosine similarities between latents and prototypes.

    Ferrante et al. 2022 (Sec. 2): after warm-up, KMeans centroids of the frozen latent space become prototypes; each
    image's latent ``h`` is compared with every prototype by cosine similarity and the temperature-scaled softmax of
    the similarities is the soft cluster assignment that conditions the decoder.

    Args:
        num_prototypes: number of prototypes ``K``.
        latent_size: size of the latent vectors ``D``.
        temperature: softmax temperature; lower values give harder assignments.

    Raises:
        ValueError: for non-positive sizes or temperature.
    """

    def __init__(self, num_prototypes: int, latent_size: int, temperature: float = 0.1) -> None:
        super().__init__()
        if num_prototypes < 1 or latent_size < 1:
            raise ValueError(f"num_prototypes and latent_size must be positive, got {num_prototypes}, {latent_size}.")
        if temperature <= 0:
            raise ValueError(f"temperature must be positive, got {temperature}.")
        self.temperature = float(temperature)
        self.register_buffer("prototypes", torch.zeros(num_prototypes, latent_size))

    @property
    def num_prototypes(self) -> int:
        return int(self.prototypes.shape[0])

    def set_prototypes(self, prototypes: torch.Tensor) -> None:
        """Replace the prototype matrix in place.

        Args:
            prototypes: ``(K, D)`` matrix, one prototype per row.

        Raises:
            ValueError: when the shape differs from ``(num_prototypes, latent_size)``.
        """
        prototypes = torch.as_tensor(prototypes, dtype=self.prototypes.dtype, device=self.prototypes.device)
        if prototypes.shape != self.prototypes.shape:
            raise ValueError(
                f"prototypes must have shape {tuple(self.prototypes.shape)}, got {tuple(prototypes.shape)}."
            )
        self.prototypes.copy_(prototypes)

    def similarity(self, h: torch.Tensor) -> torch.Tensor:
        """Cosine similarity of each latent to each prototype.

        Args:
            h: ``(B, D)`` latents.

        Returns:
            ``(B, K)`` cosine similarities in [-1, 1].

        Raises:
            ValueError: when ``h`` is not ``(B, D)``.
        """
        if h.ndim != 2 or h.shape[1] != self.prototypes.shape[1]:
            raise ValueError(f"expected latents of shape (B, {self.prototypes.shape[1]}), got {h.shape}.")
        return F.normalize(h, dim=1) @ F.normalize(self.prototypes, dim=1).t()

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        """Soft assignment.

        Args:
            h: ``(B, D)`` latents.

        Returns:
            ``(B, K)`` probabilities, each row summing to one.
        """
        return torch.softmax(self.similarity(h) / self.temperature, dim=1)
