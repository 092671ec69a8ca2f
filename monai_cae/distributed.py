"""Small helpers over ``torch.distributed`` for runs launched with ``torchrun`` (one process per device).

Everything here degrades to the single-process case when no process group is initialised, so the same code paths
serve plain and distributed runs.
"""

from __future__ import annotations

import torch
import torch.distributed as dist

__all__ = ["barrier", "broadcast_matrix", "local_batch_size", "rank_and_world_size"]


def rank_and_world_size() -> tuple[int, int]:
    """This process's rank and the world size of the default process group.

    Returns:
        ``(rank, world_size)``; ``(0, 1)`` when ``torch.distributed`` is unavailable or not initialised.
    """
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def barrier() -> None:
    """Wait for every rank; a no-op without a process group."""
    if rank_and_world_size()[1] > 1:
        dist.barrier()


def local_batch_size(global_batch_size: int) -> int:
    """Per-rank batch size that makes ``global_batch_size`` the batch seen by one optimisation step.

    Keeping ``batch_size`` global in the bundle means the single-process hyper-parameters (learning rate schedule,
    NT-Xent negatives per anchor with gathered negatives) carry over unchanged to any number of ranks.

    Args:
        global_batch_size: images per step, summed over all ranks.

    Returns:
        ``global_batch_size // world_size``.

    Raises:
        ValueError: when ``global_batch_size`` is not a positive multiple of the world size.
    """
    world_size = rank_and_world_size()[1]
    if global_batch_size < 1 or global_batch_size % world_size:
        raise ValueError(
            f"the global batch size must be a positive multiple of the world size {world_size}, "
            f"got {global_batch_size}."
        )
    return global_batch_size // world_size


def broadcast_matrix(matrix: torch.Tensor | None, device: torch.device | str, src: int = 0) -> torch.Tensor:
    """Send a 2D float32 matrix whose shape only ``src`` knows to every rank.

    The shape goes first (the receivers need it to allocate the buffer), then the values; NCCL needs ``device`` to
    be this rank's GPU, gloo works on the CPU.

    Args:
        matrix: the matrix on rank ``src``; ignored (may be ``None``) elsewhere.
        device: device of the communication buffers and of the result.
        src: sending rank.

    Returns:
        The matrix, on ``device``, identical on every rank; the input itself (moved to ``device``) without a process
        group.

    Raises:
        ValueError: when ``src`` passes no 2D matrix.
    """
    rank, world_size = rank_and_world_size()
    if rank == src:
        if matrix is None or matrix.ndim != 2:
            got = None if matrix is None else tuple(matrix.shape)
            raise ValueError(f"rank {src} must broadcast a 2D matrix, got {got}.")
        matrix = matrix.to(device=device, dtype=torch.float32).contiguous()
    if world_size == 1:
        return matrix  # type: ignore[return-value]
    known = tuple(matrix.shape) if rank == src else (0, 0)  # type: ignore[union-attr]
    shape = torch.tensor(known, dtype=torch.long, device=device)
    dist.broadcast(shape, src)
    values = matrix if rank == src else torch.empty(tuple(shape.tolist()), dtype=torch.float32, device=device)
    dist.broadcast(values, src)
    return values
