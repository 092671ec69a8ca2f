from __future__ import annotations

from .blocks import PrototypeAssignment
from .nets import (
    CAEDecoder,
    CAEEncoder,
    ConditionalDecoder,
    ContrastiveAutoEncoder,
    ProjectionHead,
    encoder_feature_shapes,
)

__all__ = [
    "CAEDecoder",
    "CAEEncoder",
    "ConditionalDecoder",
    "ContrastiveAutoEncoder",
    "ProjectionHead",
    "PrototypeAssignment",
    "encoder_feature_shapes",
]
