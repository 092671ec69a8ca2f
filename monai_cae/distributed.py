"""What ``ignite.distributed`` does not say in one call, for runs launched with ``torchrun`` (one process per device).

Rank, world size, barriers and broadcasts are ``ignite.distributed``'s; like them, these helpers degrade to the
single-process case when no process group is initialised, so the same code paths serve plain and distributed runs.
"""

from __future__ import annotations

import ignite.distributed as idist
import torch

__all__ = ["broadcast_matrix", "local_batch_size"]


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
    world_size = idist.get_world_size()
    if global_batch_size < 1 or global_batch_size % world_size:
        raise ValueError(
            f"the global batch size must be a positive multiple of the world size {world_size}, "
            f"got {global_batch_size}."
        )
    return global_batch_size // world_size


def broadcast_matrix(matrix: torch.Tensor | None, device: torch.device | str, src: int = 0) -> torch.Tensor:
    """Send a 2D float32 matrix whose shape only ``src`` knows to every rank (``ignite.distributed.broadcast`` in
    safe mode, which sends the shape first).

    Args:
        matrix: the matrix on rank ``src``; ignored (may be ``None``) elsewhere.
        device: device of the result (NCCL communicates on this rank's GPU, gloo on the CPU).
        src: sending rank.

    Returns:
        The matrix, on ``device``, identical on every rank; the input itself (moved to ``device``) without a process
        group.

    Raises:
        ValueError: when ``src`` passes no 2D matrix.
    """
    if idist.get_rank() == src:
        if matrix is None or matrix.ndim != 2:
            got = None if matrix is None else tuple(matrix.shape)
            raise ValueError(f"rank {src} must broadcast a 2D matrix, got {got}.")
        matrix = matrix.to(device=device, dtype=torch.float32).contiguous()
    if idist.get_world_size() == 1:
        return matrix  # type: ignore[return-value]
    return idist.broadcast(matrix, src=src, safe_mode=True).to(device)
