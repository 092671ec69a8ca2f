"""What every benchmark records beside its figures, and how it saves them."""

from __future__ import annotations

import json
import os
import platform
import sys

__all__ = ["environment", "save_json", "second_epoch_seconds"]


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


def second_epoch_seconds(parser) -> float:
    """Run the bundle's ``train#trainer`` of a parsed config (two epochs) and time its second epoch.

    The first epoch warms up the allocator and the loader (and fills an archive's cache); the second is what every
    later epoch costs. Only the learning-rate schedule stays attached: validation, logging and checkpoints are not
    what is measured.

    Args:
        parser: a ``monai.bundle.ConfigParser`` holding ``train.json`` and its overrides.

    Returns:
        Seconds of the second epoch.
    """
    # imported here: the cohort benchmark's parent process must stay without torch (see environment)
    import time

    from ignite.engine import Events
    from monai.utils import set_determinism

    parser["max_epochs"] = 2
    parser["max_epochs"] = 2
    parser["train#trainer#train_handlers"] = "$[@train#handlers#0]"
    set_determinism(seed=0)
    trainer = parser.get_parsed_content("train#trainer")
    marks: dict[str, float] = {}
    trainer.add_event_handler(Events.EPOCH_STARTED(once=2), lambda: marks.setdefault("start", time.perf_counter()))
    trainer.add_event_handler(Events.EPOCH_COMPLETED(once=2), lambda: marks.setdefault("end", time.perf_counter()))
    trainer.run()
    return marks["end"] - marks["start"]
