from __future__ import annotations

from .elbow import ElbowResult, elbow_kmeans, l2_normalize

__all__ = ["ElbowResult", "elbow_kmeans", "l2_normalize"]
