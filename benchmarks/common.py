"""What every benchmark records beside its figures, and how it saves them."""

from __future__ import annotations

import json
import os
import platform
import sys

__all__ = ["environment", "save_json"]


def environment() -> dict:
    """The machine a benchmark ran on: CPU count, processor, Python, and torch's version and threads when loaded.

    torch is read from the modules the benchmark already imported, never imported here: the cohort benchmark's parent
    process stays without it so that its stages, each in a fresh process, measure only their own memory.
    """
    info = {"cpu_count": os.cpu_count(), "machine": platform.processor() or platform.machine(),
            "python": platform.python_version()}
    torch = sys.modules.get("torch")
    if torch is not None:
        info.update(torch=torch.__version__, torch_threads=torch.get_num_threads())
    return info


def save_json(result: dict, path: str) -> None:
    """Write ``result`` as indented JSON to ``path``, creating its folder."""
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    with open(path, "w") as f:
        json.dump(result, f, indent=2)
