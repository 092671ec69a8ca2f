from __future__ import annotations

from .prototype_assignment import PrototypeAssignment

__all__ = ["PrototypeAssignment"]
