"""Embedding branch of the local discriminative representation: every pixel to a unit vector."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from monai.networks.blocks import ADN, Convolution
from monai.networks.layers import Conv
from torch import nn

__all__ = ["PixelEmbeddingHead"]


class PixelEmbeddingHead(nn.Module):
    """Maps a feature map to one L2-normalised embedding per pixel (Chen et al., "Unsupervised learning of local
    discriminative representation for medical images", embedding branch).

    ``num_layers`` same-size convolutions with an activation, then a ``1 x 1`` convolution to ``embedding_dim``
    channels, normalised over the channels: each pixel lies on the unit hypersphere, where the embedding loss spreads
    dissimilar pixels apart. The hidden convolutions pad by replicating the border: zero padding would tell border
    pixels from the others, an absolute-position cue that the pixel contrastive loss exploits instead of texture
    (mean IoU 0.43 / 0.73 / 0.43 instead of 0.64 / 0.69 / 0.62 over three seeds of ``tests/test_local_shapes.py``,
    balance weight 1).

    Args:
        spatial_dims: number of spatial dimensions, 2 or 3.
        in_channels: channels of the input feature map.
        embedding_dim: size of each pixel's embedding.
        hidden_channels: channels of the hidden convolutions.
        num_layers: number of hidden convolutions (each widens the receptive field by ``kernel_size - 1``).
        kernel_size: odd kernel size of the hidden convolutions.
        act: activation after each hidden convolution (MONAI ``Act`` factory).
        norm: optional normalisation after each hidden convolution (MONAI ``Norm`` factory).

    Raises:
        ValueError: for unsupported ``spatial_dims``, non-positive sizes or an even ``kernel_size``.
    """

    def __init__(
        self,
        spatial_dims: int,
        in_channels: int,
        embedding_dim: int = 16,
        hidden_channels: int = 32,
        num_layers: int = 2,
        kernel_size: int = 3,
        act: tuple | str = "GELU",
        norm: tuple | str | None = None,
    ) -> None:
        super().__init__()
        if spatial_dims not in (2, 3):
            raise ValueError(f"spatial_dims must be 2 or 3, got {spatial_dims}.")
        if min(in_channels, embedding_dim, hidden_channels) < 1 or num_layers < 0:
            raise ValueError(
                f"in_channels, embedding_dim and hidden_channels must be positive and num_layers >= 0, got "
                f"{in_channels}, {embedding_dim}, {hidden_channels}, {num_layers}."
            )
        if kernel_size < 1 or kernel_size % 2 == 0:
            raise ValueError(f"kernel_size must be odd (same-size convolutions), got {kernel_size}.")
        self.spatial_dims = spatial_dims
        self.in_channels = in_channels
        self.embedding_dim = embedding_dim
        layers: list[nn.Module] = []
        previous = in_channels
        for _ in range(num_layers):
            conv = Conv[Conv.CONV, spatial_dims](
                previous, hidden_channels, kernel_size, padding=kernel_size // 2, padding_mode="replicate"
            )
            adn = ADN("NDA", hidden_channels, act=act, norm=norm, norm_dim=spatial_dims)
            layers.append(nn.Sequential(conv, adn))
            previous = hidden_channels
        layers.append(Convolution(spatial_dims, previous, embedding_dim, kernel_size=1, conv_only=True))
        self.layers = nn.Sequential(*layers)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        """Embed every pixel.

        Args:
            features: ``(B, in_channels, *spatial)`` feature map.

        Returns:
            ``(B, embedding_dim, *spatial)`` embeddings of unit L2 norm over the channels.

        Raises:
            ValueError: when ``features`` does not have ``in_channels`` channels and ``spatial_dims`` dimensions.
        """
        if features.ndim != self.spatial_dims + 2 or features.shape[1] != self.in_channels:
            raise ValueError(
                f"expected features (B, {self.in_channels}, {self.spatial_dims} spatial dims), got {tuple(features.shape)}."
            )
        return F.normalize(self.layers(features), dim=1)
