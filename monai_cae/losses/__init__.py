from __future__ import annotations

from .cae_loss import CAELoss
from .ntxent import NTXentLoss

__all__ = ["CAELoss", "NTXentLoss"]
