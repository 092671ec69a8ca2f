"""The contrastive autoencoder: encoder, projector, decoder and, after prototype discovery, a conditional decoder."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

from .conditional_decoder import ConditionalDecoder
from .decoder import CAEDecoder
from .encoder import CAEEncoder
from .local_branch import LocalDiscriminativeBranch
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
        local_branch: add the local discriminative branch (:meth:`local`, :meth:`cluster_map`) of Chen et al.,
            "Unsupervised learning of local discriminative representation for medical images". Off, the model and
            its state dict are exactly those without the option.
        local_embedding_dim: size of each pixel's embedding in the local branch.
        local_clusters: number of pixel clusters of the local branch.
        local_hidden_channels: channels of the local embedding head's hidden convolutions.

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
        local_branch: bool = False,
        local_embedding_dim: int = 16,
        local_clusters: int = 4,
        local_hidden_channels: int = 32,
    ) -> None:
        super().__init__()
        # the architecture as built, for the model card that travels with a trained model (model.json)
        self.init_args: dict[str, Any] = dict(
            spatial_dims=spatial_dims, in_channels=in_channels,
            img_size=list(img_size) if isinstance(img_size, Sequence) else img_size, channels=list(channels),
            latent_size=latent_size, projection_hidden_size=projection_hidden_size, projection_size=projection_size,
            projection_layers=projection_layers, kernel_size=kernel_size, strides=strides, pool_size=pool_size,
            act=act, norm=norm, out_act=out_act, condition_size=condition_size,
            assignment_temperature=assignment_temperature, local_branch=local_branch,
            local_embedding_dim=local_embedding_dim, local_clusters=local_clusters,
            local_hidden_channels=local_hidden_channels,
        )
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
        self.local_branch: LocalDiscriminativeBranch | None = None
        if local_branch:
            # on the image itself: every wider or coarser map tells the pixels apart by where they are, which the
            # pixel contrastive loss exploits instead of texture. The decoder's maps are decoded from the global
            # latent (mean IoU 0.28 on tests/test_local_shapes.py's images); the encoder's first map, zero-padded,
            # strided and upsampled, sees which side of a pixel a nearby region lies on (0.62 / 0.51 / 0.49 on its
            # three seeds, against 0.64 / 0.69 / 0.62 on the image alone, both with a balance weight of 1)
            self.local_branch = LocalDiscriminativeBranch(
                spatial_dims,
                in_channels,
                local_embedding_dim,
                local_clusters,
                local_hidden_channels,
                act=act,
                norm=norm,
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

    @torch.jit.export
    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """``h = e(x)``: ``(B, C, *img_size)`` images to ``(B, latent_size)`` latents."""
        return self.encoder(x)

    @torch.jit.export
    def project(self, h: torch.Tensor) -> torch.Tensor:
        """``z = p(h)``: latents to the projection space of the contrastive loss."""
        return self.projector(h)

    @torch.jit.export
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

    @torch.jit.export
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

    @torch.jit.export
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

    def local(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Pixel embeddings and pixel-to-centre similarities of the local branch.

        Args:
            x: ``(B, C, *img_size)`` images.

        Returns:
            ``(embedding, similarity)``: ``(B, local_embedding_dim, *img_size)`` unit embeddings and
            ``(B, local_clusters, *img_size)`` cosine similarities to the cluster centres.

        Raises:
            RuntimeError: when the model was built without ``local_branch``.
        """
        if self.local_branch is None:
            raise RuntimeError("this model has no local branch: build it with local_branch=True.")
        self.encoder.check_input(x)
        return self.local_branch(x)

    def cluster_map(self, x: torch.Tensor) -> torch.Tensor:
        """Hard pixel cluster map: ``(B, *img_size)`` int64 index of each pixel's most similar centre.

        Raises:
            RuntimeError: when the model was built without ``local_branch``.
        """
        return self.local(x)[1].argmax(dim=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """The latents ``h = e(x)``, the network's prediction (the bundle's ``pred`` output).

        :meth:`project`, :meth:`decode`, :meth:`assign` and :meth:`decode_conditional` give the rest, and are
        exported with ``torch.jit.script`` beside ``forward``.

        Args:
            x: ``(B, C, *img_size)`` images.

        Returns:
            ``(B, latent_size)`` latents.
        """
        return self.encoder(x)
