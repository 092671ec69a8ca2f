"""The contrastive autoencoder: encoder, projector, decoder and, after prototype discovery, a conditional decoder."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

from .conditional_decoder import ConditionalDecoder
from .decoder import CAEDecoder
from .encoder import CAEEncoder
from .projector import ProjectionHead

__all__ = ["ContrastiveAutoEncoder"]

class ContrastiveAutoEncoder(nn.Module):
    """Autoencoder whose latent space is shaped by a contrastive loss (Ferrante et al. 2022, Fig. 1).

    ``h = encode(x)``, ``z = project(h)`` and ``y = decode(h)``. The contrastive loss is computed on ``z``, the
    reconstruction loss on ``y``, and clustering happens on ``h``.
    Once prototypes are known (KMeans on the frozen latent space), :meth:`set_prototypes` installs them in the
    conditional decoder, initialising it from the trained decoder the first time, and :meth:`decode_conditional`
    decodes ``h`` given its soft prototype assignment. The conditional decoder exists from the start (its parameters
    do not depend on the number of prototypes), so one optimizer and one checkpoint cover both phases, and a state
    dict with any number of prototypes loads into a fresh model.

    Args:
        spatial_dims: number of spatial dimensions, 2 or 3.
        in_channels: number of image channels.
        img_size: image spatial size (one int, or one per dimension). 28, 64, 128, 224 and 256 all work in 2D.
        channels: channels of the encoder's strided convolutions (the decoder mirrors them).
        latent_size: size of ``h``; 128 in the paper.
        projection_hidden_size: width of the projector's hidden layers.
        projection_size: size of ``z``.
        projection_layers: number of projector layers; 3 in the paper.
        kernel_size: convolution kernel size; 4 in the paper.
        strides: convolution stride; 2 in the paper.
        pool_size: average pooling size; 2 in the paper.
        act: activation; GELU in the paper.
        norm: optional normalisation in the convolutional blocks; none in the paper.
        out_act: optional activation on reconstructions.
        condition_size: size of the embedded soft assignment in the conditional decoder.
        assignment_temperature: temperature of the soft prototype assignment.
        num_prototypes: initial size of the (zero) prototype matrix. Leave at 0 for training; set it to the trained
            ``K`` only for tools that skip checkpoint entries whose shape differs (MONAI's ``ckpt_export``).

    Raises:
        ValueError: for invalid sizes (raised by the parts).
    """

    def __init__(
        self,
        spatial_dims: int = 2,
        in_channels: int = 1,
        img_size: Sequence[int] | int = 28,
        channels: Sequence[int] = (32, 64, 128),
        latent_size: int = 128,
        projection_hidden_size: int = 128,
        projection_size: int = 64,
        projection_layers: int = 3,
        kernel_size: int = 4,
        strides: int = 2,
        pool_size: int = 2,
        act: tuple | str = "GELU",
        norm: tuple | str | None = None,
        out_act: tuple | str | None = None,
        condition_size: int = 32,
        assignment_temperature: float = 0.1,
        num_prototypes: int = 0,
    ) -> None:
        super().__init__()
        shared: dict[str, Any] = dict(
            spatial_dims=spatial_dims,
            img_size=img_size,
            channels=tuple(channels),
            latent_size=latent_size,
            kernel_size=kernel_size,
            strides=strides,
            pool_size=pool_size,
            act=act,
            norm=norm,
        )
        self.encoder = CAEEncoder(in_channels=in_channels, **shared)
        self.projector = ProjectionHead(latent_size, projection_hidden_size, projection_size, projection_layers, act)
        self.decoder = CAEDecoder(out_channels=in_channels, out_act=out_act, **shared)
        self.conditional_decoder = ConditionalDecoder(
            out_channels=in_channels,
            out_act=out_act,
            condition_size=condition_size,
            temperature=assignment_temperature,
            num_prototypes=num_prototypes,
            **shared,
        )

    @property
    def latent_size(self) -> int:
        return self.encoder.latent_size

    @property
    def num_prototypes(self) -> int:
        """Number of prototypes, 0 before prototype discovery."""
        return self.conditional_decoder.assignment.num_prototypes

    @property
    def prototypes(self) -> torch.Tensor:
        """The ``(K, latent_size)`` prototype matrix (``K = 0`` before prototype discovery)."""
        return self.conditional_decoder.assignment.prototypes

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """``h = e(x)``: ``(B, C, *img_size)`` images to ``(B, latent_size)`` latents."""
        return self.encoder(x)

    def project(self, h: torch.Tensor) -> torch.Tensor:
        """``z = p(h)``: latents to the projection space of the contrastive loss."""
        return self.projector(h)

    def decode(self, h: torch.Tensor) -> torch.Tensor:
        """``y = d(h)``: latents to reconstructed images (the warm-up decoder)."""
        return self.decoder(h)

    def set_prototypes(self, prototypes: torch.Tensor, init_from_decoder: bool = True) -> None:
        """Install cluster prototypes in the conditional decoder.

        Args:
            prototypes: ``(K, latent_size)`` matrix of cluster centroids in the latent space.
            init_from_decoder: when no prototypes were set before, copy the warm-up decoder's weights into the
                conditional decoder so that the second phase starts from the warm-up reconstructions.

        Raises:
            ValueError: when ``prototypes`` is not ``(K, latent_size)``.
        """
        first_time = self.num_prototypes == 0 or not bool(self.prototypes.any())
        self.conditional_decoder.assignment.set_prototypes(prototypes)
        if first_time and init_from_decoder:
            self.conditional_decoder.init_from_decoder(self.decoder)

    def assign(self, h: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Soft prototype assignment of latents.

        Args:
            h: ``(B, latent_size)`` latents.

        Returns:
            ``(probabilities, cosine_similarities)``, both ``(B, K)``.

        Raises:
            RuntimeError: before :meth:`set_prototypes`.
        """
        assignment = self.conditional_decoder.assignment
        probabilities = assignment(h)
        return probabilities, assignment.similarity(h)

    def decode_conditional(self, h: torch.Tensor, assignment: torch.Tensor | None = None) -> torch.Tensor:
        """Decode latents with the conditional decoder.

        Args:
            h: ``(B, latent_size)`` latents.
            assignment: optional ``(B, K)`` soft assignment; computed from ``h`` when omitted.

        Returns:
            Reconstructed images.

        Raises:
            RuntimeError: before :meth:`set_prototypes`.
        """
        return self.conditional_decoder(h, assignment)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Encode, project and decode.

        Args:
            x: ``(B, C, *img_size)`` images.

        Returns:
            ``(h, z, y)``: latents, projections and reconstructions.
        """
        h = self.encoder(x)
        return h, self.projector(h), self.decoder(h)
