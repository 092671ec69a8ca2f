from __future__ import annotations

from .batch_positive_pair import BatchPositivePair
from .positive_pair import PositivePair, PositivePaird, PositivePairD, PositivePairDict

__all__ = ["BatchPositivePair", "PositivePair", "PositivePaird", "PositivePairD", "PositivePairDict"]
