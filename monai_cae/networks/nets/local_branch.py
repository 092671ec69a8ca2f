"""The local discriminative branch: pixel embeddings and pixel clusters of an image."""

from __future__ import annotations

import torch
from torch import nn

from monai_cae.networks.blocks import PixelClustering, PixelEmbeddingHead

__all__ = ["LocalDiscriminativeBranch"]


class LocalDiscriminativeBranch(nn.Module):
    """Embedding and clustering branches of Chen et al., "Unsupervised learning of local discriminative
    representation for medical images".

    A :class:`~monai_cae.networks.blocks.PixelEmbeddingHead` maps every pixel of the image to a unit embedding, which
    a :class:`~monai_cae.networks.blocks.PixelClustering` compares with its learnable centres. The branch reads the
    image itself, at its own resolution (see :class:`~monai_cae.networks.nets.ContrastiveAutoEncoder` for why not
    the autoencoder's feature maps).

    Args:
        spatial_dims: number of spatial dimensions, 2 or 3.
        in_channels: channels of the image.
        embedding_dim: size of each pixel's embedding.
        num_clusters: number of pixel clusters ``K``.
        hidden_channels: channels of the embedding head's hidden convolutions.
        num_layers: number of hidden convolutions of the embedding head.
        act: activation of the embedding head.
        norm: optional normalisation of the embedding head.

    Raises:
        ValueError: for invalid sizes (raised by the parts).
    """

    def __init__(
        self,
        spatial_dims: int,
        in_channels: int,
        embedding_dim: int = 16,
        num_clusters: int = 4,
        hidden_channels: int = 32,
        num_layers: int = 2,
        act: tuple | str = "GELU",
        norm: tuple | str | None = None,
    ) -> None:
        super().__init__()
        self.embedding = PixelEmbeddingHead(
            spatial_dims, in_channels, embedding_dim, hidden_channels, num_layers, act=act, norm=norm
        )
        self.clustering = PixelClustering(embedding_dim, num_clusters)

    @property
    def num_clusters(self) -> int:
        return self.clustering.num_clusters

    def forward(self, image: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Embed and cluster every pixel.

        Args:
            image: ``(B, in_channels, *spatial)`` images.

        Returns:
            ``(embedding, similarity)``: ``(B, embedding_dim, *spatial)`` unit embeddings and ``(B, K, *spatial)``
            cosine similarities to the cluster centres.
        """
        embedding = self.embedding(image)
        return embedding, self.clustering(embedding)
