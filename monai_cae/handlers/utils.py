"""Small helpers for wiring handlers in bundle configs."""

from __future__ import annotations

import glob
import os
import re
from typing import Any

__all__ = ["latest_checkpoint", "loss_parts"]

LOSS_PART_KEYS = ("loss", "contrastive", "reconstruction")


def loss_parts(output: dict[str, Any]) -> dict[str, float]:
    """``output_transform`` for ``StatsHandler``/``TensorBoardStatsHandler``: the loss parts present in ``output``.

    A dictionary (not the tuple ``from_engine([...], first=True)`` gives) is what the stats handlers log key by key;
    ``lr`` is included so the learning-rate schedule is logged beside the losses.
    """
    parts = {key: float(output[key]) for key in LOSS_PART_KEYS if key in output}
    if "lr" in output:
        parts["lr"] = float(output["lr"])
    return parts


def latest_checkpoint(checkpoint_dir: str, pattern: str = "checkpoint_epoch=*.pt") -> str:
    """Path of the checkpoint with the highest iteration or epoch number in ``checkpoint_dir``.

    Args:
        checkpoint_dir: folder written by a ``CheckpointSaver``.
        pattern: glob of the checkpoint files; the last number in a name orders them, so the pattern must select one
            kind of checkpoint (the default matches the epoch-interval files of ``CheckpointSaver``).

    Returns:
        The path.

    Raises:
        FileNotFoundError: when there is no checkpoint to resume from.
    """
    candidates = glob.glob(os.path.join(checkpoint_dir, pattern))

    def number(path: str) -> int:
        digits = re.findall(r"\d+", os.path.basename(path))
        return int(digits[-1]) if digits else -1

    if not candidates:
        raise FileNotFoundError(f"no checkpoint matching {pattern} in {os.path.abspath(checkpoint_dir)} to resume from.")
    return max(candidates, key=number)
