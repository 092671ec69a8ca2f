from __future__ import annotations

from .lars import LARS, lars_param_groups
from .lr_scheduler import LinearWarmupCosineAnnealingLR

__all__ = ["LARS", "lars_param_groups", "LinearWarmupCosineAnnealingLR"]
