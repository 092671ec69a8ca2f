from __future__ import annotations

from .pixel_clustering import PixelClustering
from .pixel_embedding import PixelEmbeddingHead
from .prototype_assignment import PrototypeAssignment

__all__ = ["PixelClustering", "PixelEmbeddingHead", "PrototypeAssignment"]
