"""Soft assignment of latent vectors to cluster prototypes."""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["PrototypeAssignment"]


class PrototypeAssignment(nn.Module):
    """Temperature-scaled softmax of cosine similarities between latents and prototypes.

    Ferrante et al. 2022 (Sec. 2): after warm-up, KMeans centroids of the frozen latent space become prototypes; each
    image's latent ``h`` is compared with every prototype by cosine similarity and the temperature-scaled softmax of
    the similarities is the soft cluster assignment that conditions the decoder.

    The number of prototypes is only known after clustering, so the prototype buffer starts empty, ``(0, D)``, and
    takes whatever ``K`` :meth:`set_prototypes` or a loaded state dict gives it.

    Args:
        latent_size: size of the latent vectors ``D``.
        temperature: softmax temperature; lower values give harder assignments.
        num_prototypes: initial number of (zero) prototypes. Only needed by tools that copy a checkpoint into a
            freshly built network key by key and skip entries whose shape differs, such as MONAI's ``ckpt_export``.

    Raises:
        ValueError: for a non-positive size or temperature.
    """

    def __init__(self, latent_size: int, temperature: float = 0.1, num_prototypes: int = 0) -> None:
        super().__init__()
        if latent_size < 1 or num_prototypes < 0:
            raise ValueError(f"latent_size must be positive and num_prototypes >= 0, got {latent_size}, {num_prototypes}.")
        if temperature <= 0:
            raise ValueError(f"temperature must be positive, got {temperature}.")
        self.latent_size = latent_size
        self.temperature = float(temperature)
        self.register_buffer("prototypes", torch.zeros(num_prototypes, latent_size))

    @property
    def num_prototypes(self) -> int:
        return int(self.prototypes.shape[0])

    def set_prototypes(self, prototypes: torch.Tensor) -> None:
        """Replace the prototype matrix.

        Args:
            prototypes: ``(K, D)`` matrix, one prototype per row, ``K >= 1``.

        Raises:
            ValueError: when the shape is not ``(K, latent_size)``.
        """
        prototypes = torch.as_tensor(prototypes).to(dtype=self.prototypes.dtype, device=self.prototypes.device)
        if prototypes.ndim != 2 or prototypes.shape[0] < 1 or prototypes.shape[1] != self.latent_size:
            raise ValueError(f"prototypes must have shape (K, {self.latent_size}), got {tuple(prototypes.shape)}.")
        self.prototypes = prototypes.clone()

    def _load_from_state_dict(self, state_dict: dict, prefix: str, *args: Any, **kwargs: Any) -> None:
        # a checkpoint may hold any number of prototypes: take its shape before the strict shape check
        incoming = state_dict.get(prefix + "prototypes")
        if incoming is not None and incoming.shape != self.prototypes.shape:
            self.prototypes = torch.empty_like(incoming, device=self.prototypes.device)
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

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

        Raises:
            RuntimeError: before any prototypes were set.
        """
        if self.prototypes.shape[0] == 0:
            raise RuntimeError("no prototypes yet: set them after prototype discovery.")
        return torch.softmax(self.similarity(h) / self.temperature, dim=1)
