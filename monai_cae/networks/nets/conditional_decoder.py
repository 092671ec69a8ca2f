"""Decoder conditioned on a soft assignment to cluster prototypes."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from monai.networks.layers.utils import get_act_layer
from torch import nn

from monai_cae.networks.blocks.prototype_assignment import PrototypeAssignment

from .decoder import CAEDecoder

__all__ = ["ConditionalDecoder"]


class ConditionalDecoder(nn.Module):
    """Decoder driven by ``h`` and its soft assignment to the cluster prototypes.

    Ferrante et al. 2022 (Sec. 2): in the second phase "the decoder is turned into a conditional decoder by adding
    layers that process information from a soft label assignment computed in the latent space". Here the assignment
    ``q`` (see :class:`PrototypeAssignment`) selects a soft mixture of prototypes ``q @ P``, a linear layer embeds it,
    and the embedding is concatenated with ``h`` and decoded by a :class:`CAEDecoder`. Going through ``q @ P`` keeps
    every learnable shape independent of the number of prototypes ``K``, which is only known after clustering, so
    the module (and an optimizer over it) can be built before the prototypes exist; a one-hot ``q`` conditions on
    one stratum's prototype. :meth:`init_from_decoder` copies a trained unconditional decoder into it so that the
    second phase starts from the warm-up reconstructions instead of from scratch.

    Args:
        spatial_dims: number of spatial dimensions.
        out_channels: number of image channels.
        img_size: image spatial size.
        channels: the encoder's channels, in encoder order.
        latent_size: size of ``h``.
        condition_size: size of the embedded assignment.
        temperature: temperature of the soft assignment.
        kernel_size: transposed-convolution kernel size.
        strides: transposed-convolution stride.
        pool_size: the encoder's pooling size.
        act: hidden activation.
        norm: optional normalisation in the decoder.
        out_act: optional output activation.
        num_prototypes: initial size of the (zero) prototype matrix; see :class:`PrototypeAssignment`.
    """

    def __init__(
        self,
        spatial_dims: int = 2,
        out_channels: int = 1,
        img_size: Sequence[int] | int = 28,
        channels: Sequence[int] = (32, 64, 128),
        latent_size: int = 128,
        condition_size: int = 32,
        temperature: float = 0.1,
        kernel_size: int = 4,
        strides: int = 2,
        pool_size: int = 2,
        act: tuple | str = "GELU",
        norm: tuple | str | None = None,
        out_act: tuple | str | None = None,
        num_prototypes: int = 0,
    ) -> None:
        super().__init__()
        if condition_size < 1:
            raise ValueError(f"condition_size must be positive, got {condition_size}.")
        self.latent_size = latent_size
        self.assignment = PrototypeAssignment(latent_size, temperature, num_prototypes)
        self.condition = nn.Sequential(nn.Linear(latent_size, condition_size), get_act_layer(act))
        self.decoder = CAEDecoder(
            spatial_dims=spatial_dims,
            out_channels=out_channels,
            img_size=img_size,
            channels=channels,
            latent_size=latent_size + condition_size,
            kernel_size=kernel_size,
            strides=strides,
            pool_size=pool_size,
            act=act,
            norm=norm,
            out_act=out_act,
        )

    @torch.no_grad()
    def init_from_decoder(self, decoder: CAEDecoder) -> None:
        """Start from a trained unconditional decoder: same weights, with the condition's inputs zeroed.

        Args:
            decoder: a :class:`CAEDecoder` with the same architecture and ``latent_size`` equal to this one's.

        Raises:
            ValueError: when the architectures differ.
        """
        own = self.decoder.state_dict()
        other = decoder.state_dict()
        if own.keys() != other.keys():
            raise ValueError("decoder architectures differ: cannot initialise the conditional decoder from it.")
        for key, value in other.items():
            if key == "fc.0.weight":
                own[key].zero_()
                own[key][:, : self.latent_size] = value
            elif own[key].shape == value.shape:
                own[key].copy_(value)
            else:
                raise ValueError(
                    f"decoder parameter {key} has shape {tuple(value.shape)}, expected {tuple(own[key].shape)}."
                )

    def forward(self, h: torch.Tensor, assignment: torch.Tensor | None = None) -> torch.Tensor:
        """Decode latents given their soft assignment.

        Args:
            h: ``(B, latent_size)`` latents.
            assignment: optional ``(B, K)`` assignment; computed from ``h`` and the prototypes when omitted, or given
                explicitly to decode a chosen stratum (for example a one-hot row).

        Returns:
            ``(B, out_channels, *img_size)`` images.

        Raises:
            ValueError: when ``assignment`` is not ``(B, K)``.
            RuntimeError: before any prototypes were set.
        """
        if assignment is None:
            assignment = self.assignment(h)
        else:
            num_prototypes = self.assignment.prototypes.shape[0]
            if assignment.ndim != 2 or assignment.shape[0] != h.shape[0] or assignment.shape[1] != num_prototypes:
                raise ValueError(
                    f"expected assignment of shape ({h.shape[0]}, {num_prototypes}), got {assignment.shape}."
                )
        return self.decoder(torch.cat([h, self.condition(assignment @ self.assignment.prototypes)], dim=1))
