"""Clustering branch of the local discriminative representation: pixels against learnable unit cluster centres."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["PixelClustering"]


class PixelClustering(nn.Module):
    """Cosine similarity of pixel embeddings to ``K`` learnable cluster centres (Chen et al., "Unsupervised learning
    of local discriminative representation for medical images", clustering branch).

    The centres are stored unconstrained and normalised on every use, so they always act as unit vectors on the
    embedding hypersphere whatever the optimizer does to the raw parameter. The soft assignment is a temperature
    softmax of these similarities, a training choice that lives in
    :class:`~monai_cae.losses.LocalClusteringLoss`; the hard cluster map (:meth:`assign`) is the most similar centre
    and does not depend on it.

    Args:
        embedding_dim: size of the pixel embeddings.
        num_clusters: number of cluster centres ``K``.

    Raises:
        ValueError: for a non-positive ``embedding_dim`` or ``num_clusters`` below 2.
    """

    def __init__(self, embedding_dim: int = 16, num_clusters: int = 4) -> None:
        super().__init__()
        if embedding_dim < 1:
            raise ValueError(f"embedding_dim must be positive, got {embedding_dim}.")
        if num_clusters < 2:
            raise ValueError(f"num_clusters must be at least 2, got {num_clusters}.")
        self.embedding_dim = embedding_dim
        self.num_clusters = num_clusters
        # random directions: uniformly spread on the sphere, so no two centres start together
        self.centres = nn.Parameter(F.normalize(torch.randn(num_clusters, embedding_dim), dim=1))

    @property
    def unit_centres(self) -> torch.Tensor:
        """The ``(K, embedding_dim)`` centres, each of unit norm."""
        return F.normalize(self.centres, dim=1)

    def forward(self, embedding: torch.Tensor) -> torch.Tensor:
        """Cosine similarity of every pixel to every centre.

        Args:
            embedding: ``(B, embedding_dim, *spatial)`` unit pixel embeddings.

        Returns:
            ``(B, K, *spatial)`` similarities in [-1, 1].

        Raises:
            ValueError: when ``embedding`` is not ``(B, embedding_dim, *spatial)`` with at least one spatial dim.
        """
        if embedding.ndim < 3 or embedding.shape[1] != self.embedding_dim:
            raise ValueError(f"expected embeddings (B, {self.embedding_dim}, *spatial), got {tuple(embedding.shape)}.")
        centres = self.unit_centres.to(embedding.dtype)
        return torch.einsum("bd...,kd->bk...", embedding, centres)

    def assign(self, embedding: torch.Tensor) -> torch.Tensor:
        """Hard cluster map: the index of the most similar centre of every pixel, ``(B, *spatial)`` int64."""
        return self(embedding).argmax(dim=1)
