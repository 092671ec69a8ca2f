from __future__ import annotations

from .blocks import PixelClustering, PixelEmbeddingHead, PrototypeAssignment
from .nets import (
    CAEDecoder,
    CAEEncoder,
    ConditionalDecoder,
    ContrastiveAutoEncoder,
    LocalDiscriminativeBranch,
    ProjectionHead,
    encoder_channels,
    encoder_feature_shapes,
)

__all__ = [
    "CAEDecoder",
    "CAEEncoder",
    "ConditionalDecoder",
    "ContrastiveAutoEncoder",
    "LocalDiscriminativeBranch",
    "PixelClustering",
    "PixelEmbeddingHead",
    "ProjectionHead",
    "PrototypeAssignment",
    "encoder_channels",
    "encoder_feature_shapes",
]
