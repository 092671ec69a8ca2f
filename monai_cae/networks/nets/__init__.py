from __future__ import annotations

from .conditional_decoder import ConditionalDecoder
from .contrastive_autoencoder import ContrastiveAutoEncoder
from .decoder import CAEDecoder
from .encoder import CAEEncoder, encoder_channels, encoder_feature_shapes
from .local_branch import LocalDiscriminativeBranch
from .projector import ProjectionHead

__all__ = [
    "CAEDecoder",
    "CAEEncoder",
    "ConditionalDecoder",
    "ContrastiveAutoEncoder",
    "LocalDiscriminativeBranch",
    "ProjectionHead",
    "encoder_channels",
    "encoder_feature_shapes",
]
