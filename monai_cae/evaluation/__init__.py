from __future__ import annotations

from .knn import knn_votes

__all__ = ["knn_votes"]
