from __future__ import annotations

from .prototype_discovery import PrototypeDiscoveryHandler
from .tensorboard_cae import TensorBoardCAEHandler, image_grid
from .utils import latest_checkpoint, loss_parts

__all__ = ["PrototypeDiscoveryHandler", "TensorBoardCAEHandler", "image_grid", "latest_checkpoint", "loss_parts"]
