"""The per-image result of stratum assignment, in memory or streamed to a folder as batches arrive."""

from __future__ import annotations

import contextlib
import csv
import dataclasses
import hashlib
import os
import shutil
import sqlite3
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass

import numpy as np
import torch

from monai_cae.utils.io import atomic_write, write_npy_rows

__all__ = ["StrataAssignment", "StrataStore", "image_digest", "write_assignments"]

_ARRAYS = ("embeddings", "probabilities", "similarities", "indices", "labels")


def image_digest(image: np.ndarray | torch.Tensor) -> str:
    """A 128-bit BLAKE2b digest of an image's values, shape and type: equal exactly for identical model inputs, so
    that pixel-identical copies of one film are found without a second pass over the archive."""
    array = np.ascontiguousarray(torch.as_tensor(image).detach().cpu().numpy())
    digest = hashlib.blake2b(digest_size=16)
    digest.update(f"{array.dtype.str}{array.shape}".encode())
    digest.update(array.tobytes())
    return digest.hexdigest()


@dataclass
class StrataAssignment:
    """Per-image results of :func:`~monai_cae.engines.assign_strata`, in dataset order: a whole dataset, or one
    chunk of a :class:`StrataStore`.

    Attributes:
        embeddings: ``(N, D)`` float32 latents ``h``.
        probabilities: ``(N, K)`` soft assignment to the prototypes.
        similarities: ``(N, K)`` cosine similarity to each prototype.
        ids: identifier of each image.
        indices: dataset index of each image.
        labels: labels where the dataset has them (``-1`` otherwise).
        cluster_maps: ``(N, *img_size)`` uint8 pixel cluster of the model's local branch, ``None`` without one.
        digests: :func:`image_digest` of each model input, ``None`` when not taken.
    """

    embeddings: np.ndarray
    probabilities: np.ndarray
    similarities: np.ndarray
    ids: list[str]
    indices: np.ndarray
    labels: np.ndarray
    cluster_maps: np.ndarray | None = None
    digests: list[str] | None = None

    @property
    def clusters(self) -> np.ndarray:
        """Hard stratum of each image: its most similar prototype."""
        return self.similarities.argmax(1)

    @property
    def nearest_similarity(self) -> np.ndarray:
        """Cosine similarity to the nearest prototype."""
        return self.similarities.max(1)

    def __len__(self) -> int:
        return len(self.ids)

    def select(self, rows: np.ndarray | slice) -> StrataAssignment:
        """The assignment of some images: ``rows`` is a boolean mask, positions or a slice."""
        positions = np.flatnonzero(rows) if isinstance(rows, np.ndarray) and rows.dtype == bool else rows
        picked = {}
        for field in dataclasses.fields(self):
            value = getattr(self, field.name)
            if isinstance(value, list):
                value = value[positions] if isinstance(positions, slice) else [value[i] for i in positions]
            elif value is not None:
                value = value[positions]
            picked[field.name] = value
        return StrataAssignment(**picked)

    @classmethod
    def concatenate(cls, parts: Sequence[StrataAssignment], latent_size: int, num_prototypes: int) -> StrataAssignment:
        """One assignment from consecutive parts (zero rows of the given sizes without parts)."""
        if not parts:
            return cls(np.zeros((0, latent_size), np.float32), np.zeros((0, num_prototypes), np.float32),
                       np.zeros((0, num_prototypes), np.float32), [], np.zeros(0, np.int64), np.zeros(0, np.int64))
        maps = [p.cluster_maps for p in parts if p.cluster_maps is not None]
        digests = [p.digests for p in parts if p.digests is not None]
        return cls(
            **{name: np.concatenate([getattr(p, name) for p in parts]) for name in _ARRAYS},
            ids=[i for p in parts for i in p.ids],
            cluster_maps=np.concatenate(maps) if len(maps) == len(parts) else None,
            digests=[d for part in digests for d in part] if len(digests) == len(parts) else None,
        )


class StrataStore:
    """A :class:`StrataAssignment` written to a folder a batch at a time, read back a chunk at a time.

    The latents (and the pixel cluster maps of a model with a local branch) go to raw files, the other columns to
    an SQLite table, so that neither the writer nor a reader holds more than a chunk. Opening the folder again reads
    what an earlier process wrote (a finished shard of a sharded run).

    Args:
        folder: the store's folder, created when missing.
        latent_size: ``D``.
        num_prototypes: ``K``.
        chunk_size: rows per chunk read back.

    Raises:
        ValueError: for a folder holding a store of other sizes.
    """

    def __init__(self, folder: str, latent_size: int, num_prototypes: int, chunk_size: int = 4096) -> None:
        self.folder = os.path.abspath(folder)
        self.latent_size, self.num_prototypes, self.chunk_size = int(latent_size), int(num_prototypes), chunk_size
        os.makedirs(self.folder, exist_ok=True)
        self._db = sqlite3.connect(os.path.join(self.folder, "rows.sqlite"))
        self._db.execute("PRAGMA journal_mode=OFF")  # a scratch file: the run is lost with a crash, never data
        self._db.execute("PRAGMA synchronous=OFF")
        with self._db:
            self._db.execute(
                "CREATE TABLE IF NOT EXISTS rows (position INTEGER PRIMARY KEY, dataset_index INTEGER, id BLOB, "
                "label INTEGER, probabilities BLOB, similarities BLOB, digest TEXT, map_shape TEXT)"
            )
            self._db.execute("CREATE TABLE IF NOT EXISTS sizes (latent_size INTEGER, num_prototypes INTEGER)")
            sizes = self._db.execute("SELECT latent_size, num_prototypes FROM sizes").fetchone()
            if sizes is None:
                self._db.execute("INSERT INTO sizes VALUES (?, ?)", (self.latent_size, self.num_prototypes))
            elif tuple(sizes) != (self.latent_size, self.num_prototypes):
                raise ValueError(f"{self.folder} holds a store of latent size and prototypes {tuple(sizes)}, not "
                                 f"{(self.latent_size, self.num_prototypes)}.")
        self._length = self._db.execute("SELECT COUNT(*) FROM rows").fetchone()[0]

    def _path(self, name: str) -> str:
        return os.path.join(self.folder, name)

    def __len__(self) -> int:
        return self._length

    def append(self, part: StrataAssignment) -> None:
        """Write the rows of ``part`` after those already stored."""
        n = len(part)
        if not n:
            return
        with open(self._path("embeddings.f32"), "ab") as f:
            f.write(np.ascontiguousarray(part.embeddings, dtype=np.float32).tobytes())
        shape = ""
        if part.cluster_maps is not None:
            with open(self._path("cluster_maps.u8"), "ab") as f:
                f.write(np.ascontiguousarray(part.cluster_maps, dtype=np.uint8).tobytes())
            shape = ",".join(str(s) for s in part.cluster_maps.shape[1:])
        probabilities = np.ascontiguousarray(part.probabilities, dtype=np.float32)
        similarities = np.ascontiguousarray(part.similarities, dtype=np.float32)
        digests = part.digests if part.digests is not None else [None] * n
        with self._db:
            self._db.executemany("INSERT INTO rows VALUES (?, ?, ?, ?, ?, ?, ?, ?)", [
                (self._length + i, int(part.indices[i]), part.ids[i].encode("utf-8", "surrogateescape"),
                 int(part.labels[i]), probabilities[i].tobytes(), similarities[i].tobytes(), digests[i], shape)
                for i in range(n)
            ])
        self._length += n

    def __iter__(self) -> Iterator[StrataAssignment]:
        """The rows in order, ``chunk_size`` at a time."""
        d, k = self.latent_size, self.num_prototypes
        with self._raw("embeddings.f32") as embeddings, self._raw("cluster_maps.u8") as maps:
            for start in range(0, self._length, self.chunk_size):
                rows = self._db.execute(
                    "SELECT dataset_index, id, label, probabilities, similarities, digest, map_shape FROM rows "
                    "WHERE position >= ? AND position < ? ORDER BY position", (start, start + self.chunk_size),
                ).fetchall()
                shape = tuple(int(s) for s in rows[0][6].split(",")) if rows[0][6] else None
                yield StrataAssignment(
                    # read, not memory-mapped: mapped pages stay resident, and would grow with the store
                    embeddings=np.fromfile(embeddings, np.float32, len(rows) * d).reshape(-1, d),
                    probabilities=np.frombuffer(b"".join(r[3] for r in rows), np.float32).reshape(-1, k),
                    similarities=np.frombuffer(b"".join(r[4] for r in rows), np.float32).reshape(-1, k),
                    ids=[r[1].decode("utf-8", "surrogateescape") for r in rows],
                    indices=np.array([r[0] for r in rows], np.int64),
                    labels=np.array([r[2] for r in rows], np.int64),
                    cluster_maps=None if shape is None
                    else np.fromfile(maps, np.uint8, len(rows) * int(np.prod(shape))).reshape(-1, *shape),
                    digests=None if rows[0][5] is None else [r[5] for r in rows],
                )

    def _raw(self, name: str) -> contextlib.AbstractContextManager:
        path = self._path(name)
        return open(path, "rb") if os.path.isfile(path) else contextlib.nullcontext()

    def remove(self) -> None:
        """Close the store and delete its folder."""
        self._db.close()
        shutil.rmtree(self.folder, ignore_errors=True)


def _assignment_csv(f, parts: Iterable[StrataAssignment], num_prototypes: int) -> None:
    writer = csv.writer(f)
    writer.writerow(["index", "id", "label", "cluster", *[f"prob_{j}" for j in range(num_prototypes)], "similarity"])
    for part in parts:
        # the properties compute over the whole part: once, not once per row
        clusters, similarity = part.clusters, part.nearest_similarity
        for i in range(len(part)):
            writer.writerow(
                [int(part.indices[i]), part.ids[i], int(part.labels[i]), int(clusters[i])]
                + [f"{p:.6f}" for p in part.probabilities[i]]
                + [f"{similarity[i]:.6f}"]
            )


def write_assignments(
    result: StrataAssignment | Iterable[StrataAssignment],
    output_dir: str,
    latent_size: int | None = None,
    num_prototypes: int | None = None,
) -> dict[str, str]:
    """Write ``embeddings.npy`` (N x D float32, dataset order) and ``assignments.csv`` (one row per image), and
    ``cluster_maps.npy`` (``(N, *img_size)`` uint8 pixel clusters, dataset order) when the model has a local branch.

    ``assignments.csv`` columns: ``index``, ``id``, ``label``, ``cluster``, ``prob_0 .. prob_{K-1}`` and
    ``similarity`` (cosine similarity to the nearest prototype). Parts (a :class:`StrataStore`) are written one at a
    time, in bounded memory.

    Args:
        result: output of :func:`~monai_cae.engines.assign_strata`, or consecutive parts of it in an iterable that
            can be iterated again (a :class:`StrataStore`).
        output_dir: destination folder.
        latent_size, num_prototypes: ``D`` and ``K``, for parts that may be none; from the data when omitted.

    Returns:
        The written paths.

    Raises:
        ValueError: for parts that are none and sizes not given.
    """
    parts: Iterable[StrataAssignment] = [result] if isinstance(result, StrataAssignment) else result
    first = next(iter(parts), None)
    if first is None and (latent_size is None or num_prototypes is None):
        raise ValueError("no rows to write and no latent_size / num_prototypes to write them with.")
    latent_size = first.embeddings.shape[1] if latent_size is None else latent_size
    num_prototypes = first.probabilities.shape[1] if num_prototypes is None else num_prototypes
    paths = {"embeddings": os.path.join(output_dir, "embeddings.npy"),
             "assignments": os.path.join(output_dir, "assignments.csv")}
    atomic_write(paths["embeddings"], lambda f: write_npy_rows(
        f, (p.embeddings for p in parts), (latent_size,), np.float32), mode="wb")
    if first is not None and first.cluster_maps is not None:
        paths["cluster_maps"] = os.path.join(output_dir, "cluster_maps.npy")
        atomic_write(paths["cluster_maps"], lambda f: write_npy_rows(
            f, (p.cluster_maps for p in parts), first.cluster_maps.shape[1:], np.uint8), mode="wb")
    atomic_write(paths["assignments"], lambda f: _assignment_csv(f, parts, num_prototypes))
    return paths
