"""Sharded, resumable stratum assignment of a large dataset over the ranks of a ``torchrun`` job, read back on rank 0
a part at a time."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import shutil
import zipfile
from collections.abc import Callable, Iterator
from typing import Any, NamedTuple

import ignite.distributed as idist
import numpy as np
import torch
from torch.utils.data import Dataset, Subset

from monai_cae.data.cohort import CohortDataLoader
from monai_cae.inference import StrataAssignment, StrataStore
from monai_cae.networks.nets import ContrastiveAutoEncoder
from monai_cae.utils.io import atomic_write

from .strata_evaluator import StrataEvaluator

__all__ = ["ShardAssignment", "ShardedStrata", "assign_strata_sharded", "model_digest", "shard_range"]

_ARRAYS = ("embeddings", "probabilities", "similarities", "indices", "labels")


class ShardedStrata(NamedTuple):
    """The merged result of :func:`assign_strata_sharded`.

    Attributes:
        assignment: the images that loaded, in dataset order (a :class:`ShardAssignment`: iterated, it reads the
            shards a part at a time).
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


def _write_shard(path: str, store: StrataStore, skipped: list[tuple[int, str, str]], identity: dict[str, Any]) -> None:
    # an uncompressed .npz whose arrays are written, and later read, a part of the rows at a time
    d, k = store.latent_size, store.num_prototypes
    text = {"ids": lambda part: part.ids}
    if len(store) and all(part.digests is not None for part in store):
        text["digests"] = lambda part: part.digests
    # fixed-width text, as numpy stores it: the widest value of the column
    width = {name: max((len(v) for part in store for v in get(part)), default=0) or 1 for name, get in text.items()}
    columns: list[tuple[str, Callable[[StrataAssignment], Any], str, tuple[int, ...]]] = [
        ("embeddings", lambda part: part.embeddings, "<f4", (d,)),
        ("probabilities", lambda part: part.probabilities, "<f4", (k,)),
        ("similarities", lambda part: part.similarities, "<f4", (k,)),
        ("indices", lambda part: part.indices, "<i8", ()),
        ("labels", lambda part: part.labels, "<i8", ()),
        *((name, get, f"<U{width[name]}", ()) for name, get in text.items()),
    ]
    small = {
        "skipped_index": np.asarray([s[0] for s in skipped], dtype=np.int64),
        "skipped_reason": np.asarray([s[1] for s in skipped], dtype=str),
        "skipped_detail": np.asarray([s[2] for s in skipped], dtype=str),
        "identity": np.asarray(json.dumps(identity, sort_keys=True)),
    }

    def write(f) -> None:
        with zipfile.ZipFile(f, "w", zipfile.ZIP_STORED, allowZip64=True) as archive:
            for name, get, dtype, row in columns:
                with archive.open(f"{name}.npy", "w", force_zip64=True) as member:
                    np.lib.format.write_array_header_1_0(
                        member, {"descr": dtype, "fortran_order": False, "shape": (len(store), *row)})
                    for part in store:
                        member.write(np.ascontiguousarray(np.asarray(get(part), dtype=dtype)).tobytes())
            for name, value in small.items():
                with archive.open(f"{name}.npy", "w", force_zip64=True) as member:
                    np.lib.format.write_array(member, value, allow_pickle=False)

    atomic_write(path, write, mode="wb")


class ShardAssignment:
    """The assignment held by shard files, read back a part at a time in rank order (iterate it), or whole (its
    :class:`~monai_cae.inference.StrataAssignment` attributes load every row on first use).

    Args:
        paths: the shard files, in rank order.
        latent_size, num_prototypes: ``D`` and ``K``.
        chunk_size: rows per part.
    """

    def __init__(self, paths: list[str], latent_size: int, num_prototypes: int, chunk_size: int = 4096) -> None:
        self.latent_size, self.num_prototypes, self.chunk_size = latent_size, num_prototypes, chunk_size
        # open from the start: the rows stay readable once the shard folder is deleted after the merge
        self._archives = [zipfile.ZipFile(path) for path in paths]
        self._whole: StrataAssignment | None = None

    def __iter__(self) -> Iterator[StrataAssignment]:
        for archive in self._archives:
            names = [n[: -len(".npy")] for n in archive.namelist()]
            readers = {name: _Rows(archive.open(f"{name}.npy")) for name in [*_ARRAYS, "ids"]
                       + (["digests"] if "digests" in names else [])}
            try:
                while True:
                    blocks = {name: reader.read(self.chunk_size) for name, reader in readers.items()}
                    if not len(blocks["ids"]):
                        break
                    yield StrataAssignment(
                        ids=[str(i) for i in blocks.pop("ids")],
                        digests=[str(d) for d in blocks.pop("digests")] if "digests" in blocks else None,
                        **blocks,
                    )
            finally:
                for reader in readers.values():
                    reader.file.close()

    def __getattr__(self, name: str) -> Any:
        if name.startswith("_") or name not in {f.name for f in dataclasses.fields(StrataAssignment)} | {
                "clusters", "nearest_similarity"}:
            raise AttributeError(name)
        if self._whole is None:
            self._whole = StrataAssignment.concatenate(list(self), self.latent_size, self.num_prototypes)
        return getattr(self._whole, name)


class _Rows:
    """The rows of a ``.npy`` stream, read a block at a time."""

    def __init__(self, file: Any) -> None:
        self.file = file
        np.lib.format.read_magic(file)
        self.shape, _, self.dtype = np.lib.format.read_array_header_1_0(file)
        self.row_bytes = int(np.prod(self.shape[1:], dtype=np.int64)) * self.dtype.itemsize

    def read(self, rows: int) -> np.ndarray:
        data = self.file.read(rows * self.row_bytes) if self.row_bytes else b""
        count = len(data) // self.row_bytes if self.row_bytes else 0
        return np.frombuffer(data, dtype=self.dtype).reshape(count, *self.shape[1:]).copy()


def _shard_identity(path: str) -> dict[str, Any] | None:
    if not os.path.isfile(path):
        return None
    try:
        with np.load(path, allow_pickle=False) as data:
            return json.loads(str(data["identity"]))
    except (OSError, ValueError, KeyError, zipfile.BadZipFile):  # a shard cut by a killed writer is recomputed
        return None


def _shard_skipped(path: str) -> list[tuple[int, str, str]]:
    with np.load(path, allow_pickle=False) as data:
        return [(int(i), str(r), str(d))
                for i, r, d in zip(data["skipped_index"], data["skipped_reason"], data["skipped_detail"])]


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
    digests: bool = False,
) -> ShardedStrata | None:
    """Assign a dataset to the prototypes with every rank doing one contiguous shard; rank 0 merges.

    Each rank embeds and assigns its block of indices (:func:`shard_range`) with a
    :class:`~monai_cae.data.CohortDataLoader` (so unreadable cohort images are skipped and reported, and other
    datasets pass through), and writes ``shard_<rank>.npz`` atomically into ``shard_dir``. A shard already there
    from an interrupted run is reused when it was written for the same dataset length, block, model
    (:func:`model_digest`) and ``fingerprint``, so a killed job resumes with the missing shards only. After a
    barrier, rank 0 reads the shards in rank order, which is dataset order (a :class:`ShardAssignment`, a part at a
    time, so that no rank holds every row), calls ``write`` on the result and only then deletes ``shard_dir`` (a run killed while writing keeps its shards; without ``write`` they stay).

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
        digests: also take :func:`~monai_cae.inference.image_digest` of every model input (the report's copies).

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

    if _shard_identity(path(rank)) != identity(rank):
        loader = CohortDataLoader(Subset(dataset, shard_range(length, rank, world_size)), batch_size, num_workers)
        scratch = os.path.join(shard_dir, f".rank_{rank}")
        shutil.rmtree(scratch, ignore_errors=True)  # an interrupted run's rows
        store = StrataStore(scratch, network.latent_size, network.num_prototypes)
        StrataEvaluator(device, loader, network, progress=progress, store=store, digests=digests).run()
        _write_shard(path(rank), store, list(loader.skipped), identity(rank))
        store.remove()
    idist.barrier()
    if rank != 0:
        return None
    missing = [path(r) for r in range(world_size) if _shard_identity(path(r)) != identity(r)]
    if missing:
        raise FileNotFoundError(f"shards missing or written for other inputs: {missing}.")
    paths = [path(r) for r in range(world_size)]
    result = ShardedStrata(
        ShardAssignment(paths, network.latent_size, network.num_prototypes),  # type: ignore[arg-type]
        [s for p in paths for s in _shard_skipped(p)],
    )
    if write is not None:
        write(result)
        shutil.rmtree(shard_dir, ignore_errors=True)
    return result
