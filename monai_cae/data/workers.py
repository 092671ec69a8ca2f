"""How the CPUs are shared when an archive is read: the header scan and the decoding processes share one rule, and
the threads of the main process get what they leave."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator

import torch

__all__ = ["available_cpus", "default_num_workers", "threads_beside_workers", "validate_num_workers"]


def available_cpus() -> int:
    """The CPUs this process may run on: its affinity where the platform has one, else the CPU count."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def default_num_workers(batches: int | None = None) -> int:
    """Reading processes for an archive: one per CPU this process may use, shared among the local ranks.

    Reading headers and decoding (codecs, LUTs, resizing) is nearly all the cost of streaming an archive, and it runs
    in one Python process per worker, so a worker per core is what lets the pipeline use the machine. Under
    ``torchrun`` the CPUs are divided by ``LOCAL_WORLD_SIZE`` so that the ranks of one node do not oversubscribe it.

    Args:
        batches: batches (or chunks of files) there are to read; no more workers than that are started (a worker that
            never gets one only costs its start-up).

    Returns:
        The number of workers, 0 (read in the main process) on a single CPU or for a single batch.
    """
    workers = available_cpus() // max(1, int(os.environ.get("LOCAL_WORLD_SIZE", 1)))
    if batches is not None:
        workers = min(workers, batches)
    return workers if workers > 1 else 0


def validate_num_workers(num_workers: int | None) -> int | None:
    """``num_workers`` as given, checked: ``None`` (one per CPU, :func:`default_num_workers`) or at least 0.

    Raises:
        ValueError: for a negative number.
    """
    if num_workers is not None and num_workers < 0:
        raise ValueError(f"num_workers must be >= 0 (or None for one per CPU), got {num_workers}.")
    return num_workers


@contextlib.contextmanager
def threads_beside_workers(num_workers: int, device: torch.device | str = "cpu") -> Iterator[None]:
    """Within the block, torch's CPU threads in this process are at most the CPUs that ``num_workers`` worker
    processes leave (one at least); restored after.

    A CPU model beside decoding processes that already fill the machine only oversubscribes it: OpenMP threads spin
    while they wait, taking time from the decoding, which is the expensive part.

    Args:
        num_workers: worker processes running beside this one (0: nothing changes).
        device: where the model runs; on a GPU nothing changes.
    """
    threads = torch.get_num_threads()
    if num_workers and torch.device(device).type == "cpu":
        torch.set_num_threads(max(1, min(threads, available_cpus() - num_workers)))
    try:
        yield
    finally:
        torch.set_num_threads(threads)
