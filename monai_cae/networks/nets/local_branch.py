"""The local discriminative branch: pixel embeddings and pixel clusters from the autoencoder's feature maps."""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from monai.utils import ensure_tuple_rep
from torch import nn

from monai_cae.networks.blocks import PixelClustering, PixelEmbeddingHead

__all__ = ["LocalDiscriminativeBranch"]


class LocalDiscriminativeBranch(nn.Module):
    """Embedding and clustering branches of Chen et al., "Unsupervised learning of local discriminative
    representation for medical images", on feature maps of another network.

    The feature maps (any resolution) are resized to ``img_size`` (bilinear / trilinear), concatenated over the
    channels and fed to a :class:`~monai_cae.networks.blocks.PixelEmbeddingHead`, whose unit embeddings are compared
    with the learnable centres of a :class:`~monai_cae.networks.blocks.PixelClustering`.

    Args:
        spatial_dims: number of spatial dimensions, 2 or 3.
        in_channels: total channels of the feature maps passed to :meth:`forward`.
        img_size: output spatial size (one int, or one per dimension).
        embedding_dim: size of each pixel's embedding.
        num_clusters: number of pixel clusters ``K``.
        hidden_channels: channels of the embedding head's hidden convolutions.
        num_layers: number of hidden convolutions of the embedding head.
        act: activation of the embedding head.
        norm: optional normalisation of the embedding head.

    Raises:
        ValueError: for invalid sizes (raised by the parts) or a non-positive ``img_size``.
    """

    def __init__(
        self,
        spatial_dims: int,
        in_channels: int,
        img_size: Sequence[int] | int,
        embedding_dim: int = 16,
        num_clusters: int = 4,
        hidden_channels: int = 32,
        num_layers: int = 2,
        act: tuple | str = "GELU",
        norm: tuple | str | None = None,
    ) -> None:
        super().__init__()
        self.img_size = [int(s) for s in ensure_tuple_rep(img_size, spatial_dims)]
        if min(self.img_size) < 1:
            raise ValueError(f"img_size must be positive, got {img_size}.")
        self.embedding = PixelEmbeddingHead(
            spatial_dims, in_channels, embedding_dim, hidden_channels, num_layers, act=act, norm=norm
        )
        self.clustering = PixelClustering(embedding_dim, num_clusters)
        self.mode = "bilinear" if spatial_dims == 2 else "trilinear"

    @property
    def num_clusters(self) -> int:
        return self.clustering.num_clusters

    def forward(self, features: Sequence[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        """Embed and cluster every pixel.

        Args:
            features: feature maps ``(B, C_i, *spatial_i)`` with ``sum(C_i) == in_channels``.

        Returns:
            ``(embedding, similarity)``: ``(B, embedding_dim, *img_size)`` unit embeddings and
            ``(B, K, *img_size)`` cosine similarities to the cluster centres.

        Raises:
            ValueError: when no feature map is given, or the maps differ in batch size or channel total.
        """
        if len(features) == 0 or len({f.shape[0] for f in features}) != 1:
            raise ValueError(f"expected feature maps of one batch, got shapes {[tuple(f.shape) for f in features]}.")
        resized = [
            f if list(f.shape[2:]) == self.img_size else F.interpolate(f, size=self.img_size, mode=self.mode)
            for f in features
        ]
        embedding = self.embedding(torch.cat(resized, dim=1))
        return embedding, self.clustering(embedding)
