"""Writing files and folders so that a reader, or a run killed half-way, never sees them half written."""

from __future__ import annotations

import ctypes
import os
import shutil
import sys
import uuid
from collections.abc import Callable, Iterable, Sequence
from typing import BinaryIO

import numpy as np

__all__ = ["atomic_write", "publish_folder", "write_npy_rows"]


def atomic_write(path: str, write: Callable, mode: str = "w") -> None:
    """Write a file through a temporary sibling and an atomic rename, so readers never see half a file.

    Args:
        path: destination.
        write: function receiving the open temporary file.
        mode: file mode, ``"w"`` or ``"wb"``.
    """
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    # a plain exclusive open (not mkstemp, which makes the file private) gives the usual umask permissions
    tmp = os.path.join(folder, f".tmp-{uuid.uuid4().hex}-{os.path.basename(path)}")
    try:
        # UTF-8 whatever the locale: a header field can hold any character
        text = {"newline": "", "encoding": "utf-8"} if "b" not in mode else {}
        with open(tmp, mode.replace("w", "x"), **text) as f:
            write(f)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise


def _exchange(a: str, b: str) -> bool:
    # renameat2(RENAME_EXCHANGE) swaps two folders in one atomic step (Linux >= 3.15, glibc >= 2.28)
    if not sys.platform.startswith("linux"):
        return False
    try:
        renameat2 = ctypes.CDLL(None, use_errno=True).renameat2
    except (AttributeError, OSError):
        return False
    at_fdcwd, rename_exchange = -100, 2
    return renameat2(at_fdcwd, os.fsencode(a), at_fdcwd, os.fsencode(b), rename_exchange) == 0


def publish_folder(staging: str, output_dir: str, overwrite: bool = False) -> None:
    """Move a finished staging folder to ``output_dir`` so that readers see the old folder or the new, never half.

    A missing or empty ``output_dir`` is replaced by one ``rename``; an existing one (with ``overwrite``) is swapped
    with ``renameat2(RENAME_EXCHANGE)``, then removed. Where that call is missing, the old folder is renamed aside
    first (a kill between the two renames leaves it complete under ``<staging>.old``).

    Args:
        staging: the finished folder, on the same file system as ``output_dir``.
        output_dir: destination.
        overwrite: whether a non-empty ``output_dir`` may be replaced.

    Raises:
        FileExistsError: when ``output_dir`` is not empty and ``overwrite`` is false.
    """
    if os.path.isdir(output_dir) and os.listdir(output_dir):
        if not overwrite:
            raise FileExistsError(f"output_dir {os.path.abspath(output_dir)} already holds a report; pass --overwrite.")
        if _exchange(staging, output_dir):
            shutil.rmtree(staging)
            return
        aside = staging + ".old"
        os.rename(output_dir, aside)
        os.rename(staging, output_dir)
        shutil.rmtree(aside)
        return
    os.rename(staging, output_dir)  # POSIX rename replaces an empty folder atomically


def write_npy_rows(f: BinaryIO, parts: Iterable[np.ndarray], row_shape: Sequence[int], dtype: type) -> int:
    """Write consecutive blocks of rows as one ``.npy`` array (the bytes ``numpy.save`` writes), one block in memory
    at a time.

    The header is written first with zero rows and again with the count at the end, which keeps its length (it is
    padded to 64 bytes).

    Args:
        f: a seekable binary file, at its start.
        parts: ``(n_i, *row_shape)`` blocks.
        row_shape: the shape of one row.
        dtype: the array's type; blocks are converted to it.

    Returns:
        The number of rows written.
    """
    def header(rows: int) -> None:
        np.lib.format.write_array_header_1_0(
            f, {"descr": np.lib.format.dtype_to_descr(np.dtype(dtype)), "fortran_order": False,
                "shape": (rows, *(int(s) for s in row_shape))}
        )

    header(0)
    data_start = f.tell()
    rows = 0
    for part in parts:
        block = np.ascontiguousarray(part, dtype=dtype)
        f.write(block.tobytes())
        rows += len(block)
    end = f.tell()
    f.seek(0)
    header(rows)
    if f.tell() != data_start:  # a header that grew would overwrite data: only a shape of ~10^40 rows could
        raise ValueError(f"the .npy header for {rows} rows does not fit the space written for it.")
    f.seek(end)
    return rows
