"""The lowest layer: helpers that every other part of monai_cae may use, and that import none of it."""

from __future__ import annotations

from .io import atomic_write, publish_folder

__all__ = ["atomic_write", "publish_folder"]
