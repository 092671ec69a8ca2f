"""Sharded, resumable stratum assignment of a large dataset over the ranks of a ``torchrun`` job, merged on rank 0."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from collections.abc import Callable
from typing import Any, NamedTuple

import ignite.distributed as idist
import numpy as np
import torch
from torch.utils.data import Dataset, Subset

from monai_cae.data.cohort import CohortDataLoader
from monai_cae.networks.nets import ContrastiveAutoEncoder

from monai_cae.utils.io import atomic_write

from .strata import StrataAssignment
from .strata_evaluator import assign_strata

__all__ = ["ShardedStrata", "assign_strata_sharded", "model_digest", "shard_range"]

_ARRAYS = ("embeddings", "probabilities", "similarities", "indices", "labels")


class ShardedStrata(NamedTuple):
    """The merged result of :func:`assign_strata_sharded`.

    Attributes:
        assignment: the images that loaded, in dataset order.
        skipped: ``(index, reason, detail)`` of the images that failed to load (cohort datasets), in dataset order.
    """

    assignment: StrataAssignment
    skipped: list[tuple[int, str, str]]


def shard_range(length: int, rank: int, world_size: int) -> range:
    """The contiguous block of dataset indices of one rank; block sizes differ by at most one.

    Contiguous blocks (rather than strided ones) make the merge a plain concatenation in rank order.

    Args:
        length: dataset length.
        rank: this rank.
        world_size: number of ranks.

    Returns:
        The rank's indices.

    Raises:
        ValueError: for a negative length or a rank outside ``[0, world_size)``.
    """
    if length < 0 or not 0 <= rank < world_size:
        raise ValueError(f"need length >= 0 and 0 <= rank < world_size, got {length}, {rank}, {world_size}.")
    base, extra = divmod(length, world_size)
    start = rank * base + min(rank, extra)
    return range(start, start + base + (rank < extra))


def model_digest(network: torch.nn.Module) -> str:
    """SHA-256 of a network's state dict (names, shapes, dtypes and values), to tell whose outputs a shard holds.

    Args:
        network: the network.

    Returns:
        The hexadecimal digest.
    """
    digest = hashlib.sha256()
    for name, value in network.state_dict().items():
        value = value.detach().cpu().contiguous()
        digest.update(f"{name}:{tuple(value.shape)}:{value.dtype};".encode())
        digest.update(value.reshape(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


def _write_shard(path: str, result: ShardedStrata, identity: dict[str, Any]) -> None:
    assignment, skipped = result
    arrays = {name: getattr(assignment, name) for name in _ARRAYS}
    arrays["ids"] = np.asarray(assignment.ids, dtype=str)
    arrays["skipped_index"] = np.asarray([s[0] for s in skipped], dtype=np.int64)
    arrays["skipped_reason"] = np.asarray([s[1] for s in skipped], dtype=str)
    arrays["skipped_detail"] = np.asarray([s[2] for s in skipped], dtype=str)
    arrays["identity"] = np.asarray(json.dumps(identity, sort_keys=True))
    atomic_write(path, lambda f: np.savez(f, **arrays), mode="wb")


def _read_shard(path: str, identity: dict[str, Any]) -> ShardedStrata | None:
    """The shard at ``path`` when it exists and was written for ``identity``, else ``None``."""
    if not os.path.isfile(path):
        return None
    with np.load(path, allow_pickle=False) as data:
        if json.loads(str(data["identity"])) != identity:
            return None
        assignment = StrataAssignment(ids=[str(i) for i in data["ids"]], **{name: data[name] for name in _ARRAYS})
        skipped = [
            (int(i), str(r), str(d))
            for i, r, d in zip(data["skipped_index"], data["skipped_reason"], data["skipped_detail"])
        ]
    return ShardedStrata(assignment, skipped)


def _merge(parts: list[ShardedStrata]) -> ShardedStrata:
    assignments = [p.assignment for p in parts]
    merged = StrataAssignment(
        ids=[i for a in assignments for i in a.ids],
        **{name: np.concatenate([getattr(a, name) for a in assignments]) for name in _ARRAYS},
    )
    return ShardedStrata(merged, [s for p in parts for s in p.skipped])


def assign_strata_sharded(
    network: ContrastiveAutoEncoder,
    dataset: Dataset,
    shard_dir: str,
    write: Callable[[ShardedStrata], Any] | None = None,
    batch_size: int = 512,
    num_workers: int | None = None,
    device: torch.device | str = "cpu",
    progress: bool = True,
    fingerprint: str = "",
    rank: int | None = None,
    world_size: int | None = None,
) -> ShardedStrata | None:
    """Assign a dataset to the prototypes with every rank doing one contiguous shard; rank 0 merges.

    Each rank embeds and assigns its block of indices (:func:`shard_range`) with a
    :class:`~monai_cae.data.CohortDataLoader` (so unreadable cohort images are skipped and reported, and other
    datasets pass through), and writes ``shard_<rank>.npz`` atomically into ``shard_dir``. A shard already there
    from an interrupted run is reused when it was written for the same dataset length, block, model
    (:func:`model_digest`) and ``fingerprint``, so a killed job resumes with the missing shards only. After a
    barrier, rank 0 concatenates the shards in rank order, which is dataset order, calls ``write`` on the result and
    only then deletes ``shard_dir`` (a run killed while writing keeps its shards; without ``write`` they stay).

    Without a process group, ``rank`` and ``world_size`` may be given to run the shards one at a time (each call
    then computes one shard; the call with ``rank=0`` merges and expects the others' shards to exist).

    Args:
        network: trained network with prototypes, on ``device``.
        dataset: dataset of ``{"image", "index", "id", "label"}`` items (a MedMNIST split, an image folder or a
            :class:`~monai_cae.data.CohortDataset`).
        shard_dir: folder of the shard files; must be shared by all ranks (one file system).
        write: called on rank 0 with the merged result, e.g. to write ``embeddings.npy`` and ``assignments.csv``
            through :func:`~monai_cae.engines.write_assignments`.
        batch_size: images per batch.
        num_workers: loader processes per rank; the node's CPUs shared among its ranks when ``None``.
        device: this rank's device.
        progress: show a progress bar.
        fingerprint: text identifying the inputs beyond the dataset length (e.g. dataset name and split, or the
            archive path); shards with another fingerprint are recomputed.
        rank: this process's rank; from ``torch.distributed`` when omitted.
        world_size: number of ranks; from ``torch.distributed`` when omitted.

    Returns:
        The merged :class:`ShardedStrata` on rank 0, ``None`` on the other ranks.

    Raises:
        ValueError: for an invalid ``rank`` / ``world_size`` pair.
        FileNotFoundError: on rank 0, when another rank's shard is missing or stale after the barrier.
    """
    default_rank, default_world_size = idist.get_rank(), idist.get_world_size()
    rank = default_rank if rank is None else rank
    world_size = default_world_size if world_size is None else world_size
    length = len(dataset)  # type: ignore[arg-type]
    digest = model_digest(network)

    def identity(r: int) -> dict[str, Any]:
        block = shard_range(length, r, world_size)
        return {"length": length, "start": block.start, "stop": block.stop, "model": digest, "fingerprint": fingerprint}

    def path(r: int) -> str:
        return os.path.join(shard_dir, f"shard_{r}.npz")

    if _read_shard(path(rank), identity(rank)) is None:
        loader = CohortDataLoader(Subset(dataset, shard_range(length, rank, world_size)), batch_size, num_workers)
        assignment = assign_strata(network, loader, device, progress)
        _write_shard(path(rank), ShardedStrata(assignment, list(loader.skipped)), identity(rank))
    idist.barrier()
    if rank != 0:
        return None
    parts = [_read_shard(path(r), identity(r)) for r in range(world_size)]
    missing = [path(r) for r, part in enumerate(parts) if part is None]
    if missing:
        raise FileNotFoundError(f"shards missing or written for other inputs: {missing}.")
    result = _merge(parts)  # type: ignore[arg-type]
    if write is not None:
        write(result)
        shutil.rmtree(shard_dir, ignore_errors=True)
    return result
