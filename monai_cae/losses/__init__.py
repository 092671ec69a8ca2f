from __future__ import annotations

from .cae_loss import CAELoss
from .local_clustering import LocalClusteringLoss
from .local_discrimination import LocalDiscriminationLoss
from .local_embedding import LocalEmbeddingLoss, sample_neighbour_pairs
from .ntxent import NTXentLoss

__all__ = [
    "CAELoss",
    "LocalClusteringLoss",
    "LocalDiscriminationLoss",
    "LocalEmbeddingLoss",
    "NTXentLoss",
    "sample_neighbour_pairs",
]
