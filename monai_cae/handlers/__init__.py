from __future__ import annotations

from .prototype_discovery import PrototypeDiscoveryHandler
from .pseudo_classes import NEGATIVES, PseudoClassHandler, cluster_aware_negatives
from .tensorboard_cae import TensorBoardCAEHandler, image_grid
from .utils import latest_checkpoint, loss_parts

__all__ = [
    "NEGATIVES",
    "PrototypeDiscoveryHandler",
    "PseudoClassHandler",
    "TensorBoardCAEHandler",
    "cluster_aware_negatives",
    "image_grid",
    "latest_checkpoint",
    "loss_parts",
]
