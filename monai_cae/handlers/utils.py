"""Small helpers for wiring handlers in bundle configs."""

from __future__ import annotations

import glob
import os
import re
import zipfile
from typing import Any

__all__ = ["latest_checkpoint", "loss_parts"]

LOSS_PART_KEYS = ("loss", "contrastive", "reconstruction", "local")


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
    """Path of the complete checkpoint with the highest iteration or epoch number in ``checkpoint_dir``.

    MONAI's ``CheckpointSaver`` writes in place (not through a temporary file), so a run killed while saving leaves a
    truncated newest file. A torch checkpoint is a zip archive whose directory is written last, so files that are not
    complete zip archives are passed over and the next newest one is used.

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

    complete = [path for path in candidates if zipfile.is_zipfile(path)]
    if not complete:
        raise FileNotFoundError(
            f"no complete checkpoint matching {pattern} in {os.path.abspath(checkpoint_dir)} to resume from."
        )
    return max(complete, key=number)
