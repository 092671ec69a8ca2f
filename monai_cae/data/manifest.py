"""The manifest of an image archive: every file found, what it is, and whether it is used or why not."""

from __future__ import annotations

import csv
import dataclasses
import functools
import itertools
import os
import re
import sqlite3
import stat
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass

from monai.utils import optional_import
from tqdm.auto import tqdm

from monai_cae.utils.io import atomic_write

from .dicom import RADIOGRAPH_MODALITIES, dicom_image_problem, header_fields, is_dicom_file, read_dicom_header
from .privacy import pseudonymize
from .unusable import DEFAULT_MAX_PIXELS, UnusableImageError, check_image_size, validate_max_pixels
from .workers import default_num_workers, validate_num_workers

__all__ = [
    "MANIFEST_COLUMNS",
    "NIFTI_EXTENSIONS",
    "PIL_EXTENSIONS",
    "ITK_EXTENSIONS",
    "CHEST_BODY_PARTS",
    "REPORT_MARKER",
    "ManifestEntry",
    "ManifestStore",
    "SelectedEntries",
    "csv_cell",
    "display_text",
    "list_archive_files",
    "walk_archive_files",
    "probe_file",
    "read_image_shape",
    "read_manifest",
    "scan_archive",
    "write_manifest",
]

NIFTI_EXTENSIONS = (".nii", ".nii.gz")
PIL_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff")
ITK_EXTENSIONS = (".mha", ".mhd", ".nrrd", ".nhdr")

SELECTED, SKIPPED, PROCESSED = "selected", "skipped", "processed"

CHEST_BODY_PARTS = ("CHEST",)
"""The default body-part selection: a chest stratum must not hold a leg radiograph (an empty tag still passes)."""

REPORT_MARKER = ".monai-cae-report"
"""The file :func:`~monai_cae.reports.write_report` puts in every report folder it writes: :func:`scan_archive`
never reads a folder that holds it, so that a report kept inside its archive does not become a patient."""

# a report's staging folder beside its output folder, ".<name>.tmp-<run>" (also ".<name>.tmp-<run>.old"), which a
# killed run may leave behind before it holds the marker
_STAGING_FOLDER = re.compile(r"^\..+\.tmp-")
# files a scanning process reads per task, and files handed out at a time: the walk runs at most a block ahead of the
# header reads, and a small archive (under two chunks) is read in this process
_PROBE_CHUNK, _PROBE_BLOCK = 32, 1024
# what makes a spreadsheet evaluate a cell (OWASP, CSV injection)
_FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")


def display_text(text: str) -> str:
    """Text that can be written as UTF-8: what a file name holds that is not UTF-8 becomes a visible escape.

    Python keeps the undecodable bytes of a file name (a Latin-1 ``café`` from an old file server) as surrogate
    escapes, which every UTF-8 writer refuses; they become ``\\xe9`` here, while the file is still opened by its
    original name.

    Args:
        text: a name or message, possibly holding surrogate escapes.

    Returns:
        ``text`` with each undecodable byte written as ``\\xNN``; unchanged when it is valid text.
    """
    try:
        return text.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")
    except UnicodeEncodeError:  # a lone surrogate that no file name produced
        return text.encode("utf-8", "backslashreplace").decode("utf-8")


def csv_cell(value: object) -> object:
    """A value as every CSV file of the project writes it: text never run as a formula by a spreadsheet.

    Text is made writable (:func:`display_text`), and text that starts like a formula (``=``, ``+``, ``-``, ``@``,
    tab or carriage return; a file name or header field can be ``=HYPERLINK(...)``) gets a leading ``'``, as OWASP
    advises; so does such text already behind quotes, so that exactly one quote can be taken away when reading
    (:func:`read_manifest`). Numbers are not text and pass unchanged: a negative similarity stays a number.

    Args:
        value: a cell value.

    Returns:
        The value to hand to the ``csv`` writer.
    """
    if not isinstance(value, str):
        return value
    text = display_text(value)
    return "'" + text if text.lstrip("'").startswith(_FORMULA_STARTS) else text


def _read_cell(cell: str) -> str:
    # the inverse of csv_cell's quoting
    return cell[1:] if cell.startswith("'") and cell.lstrip("'").startswith(_FORMULA_STARTS) else cell


@dataclass
class ManifestEntry:
    """One file of an archive.

    Attributes:
        path: the file's path (as found below the scanned root).
        image_id: identifier in the outputs: the path relative to the root (bytes of the name that are not UTF-8
            escaped, :func:`display_text`), or a keyed pseudonym.
        format: ``"dicom"``, ``"nifti"``, ``"image"`` (PNG, JPEG, TIFF, BMP, ITK formats) or ``""`` when unknown.
        status: ``"selected"`` (to be processed), ``"processed"`` or ``"skipped"``.
        reason: skip reason code (a key of :data:`monai_cae.data.dicom.SKIP_REASONS`), empty otherwise.
        detail: the specific explanation of a skip.
        PatientID, StudyInstanceUID, SeriesInstanceUID, SOPInstanceUID, StudyDate, Modality, ViewPosition,
        BodyPartExamined, Manufacturer, StationName, PatientSex: header fields (pseudonymised identifiers when a key
            is given). For files without a DICOM header, PatientID is the first folder below the root and
            StudyInstanceUID the second.
        PatientAge: the patient's age band (``"60-79"``, see :data:`monai_cae.data.dicom.AGE_BANDS`), never the age.
        PixelSpacing: row and column spacing in mm, ``"0.168\\0.168"``; ``ImagerPixelSpacing`` where the file has no
            ``PixelSpacing``.
        TransferSyntaxUID: DICOM transfer syntax, empty for other formats.
        rows, columns: image size from the header (0 when unknown).
    """

    path: str
    image_id: str
    format: str = ""
    status: str = SELECTED
    reason: str = ""
    detail: str = ""
    PatientID: str = ""
    StudyInstanceUID: str = ""
    SeriesInstanceUID: str = ""
    SOPInstanceUID: str = ""
    StudyDate: str = ""
    Modality: str = ""
    ViewPosition: str = ""
    BodyPartExamined: str = ""
    Manufacturer: str = ""
    StationName: str = ""
    PatientSex: str = ""
    PatientAge: str = ""
    PixelSpacing: str = ""
    TransferSyntaxUID: str = ""
    rows: int = 0
    columns: int = 0

    def skip(self, error: UnusableImageError) -> None:
        """Mark the entry as skipped for ``error``'s reason (the file's path is masked in the detail)."""
        # library messages may quote the path, which can hold a patient's name or ID
        self.status, self.reason, self.detail = SKIPPED, error.reason, error.detail.replace(self.path, "<file>")


MANIFEST_COLUMNS = tuple(f.name for f in dataclasses.fields(ManifestEntry))

_INTEGER_COLUMNS = ("rows", "columns")
_QUOTED_COLUMNS = ", ".join(f'"{name}"' for name in MANIFEST_COLUMNS)
_STORE_CHUNK = 2048  # rows written or read per statement: bounded memory, few round trips


def _cell(value: str | int) -> bytes | int:
    # file names and header text may hold surrogate escapes, which SQLite's UTF-8 text refuses: kept as bytes
    return value if isinstance(value, int) else value.encode("utf-8", "surrogateescape")


def _entry(row: Sequence) -> ManifestEntry:
    return ManifestEntry(*(v if isinstance(v, int) else v.decode("utf-8", "surrogateescape") for v in row))


class ManifestStore(Sequence[ManifestEntry]):
    """Every entry of an archive manifest, in an SQLite file, read and written a chunk at a time.

    Index ``i`` is the ``i``-th entry appended (path order for :func:`~monai_cae.data.scan_archive`). An entry read
    is a copy: a change is kept by :meth:`update`. Each process opens its own connection, so that the loader
    workers of a :class:`~monai_cae.data.CohortDataset` read the file too.

    Args:
        path: the SQLite file; created (with an empty manifest) when it does not exist.

    Raises:
        ValueError: when ``path`` is an SQLite file without a manifest.
    """

    def __init__(self, path: str) -> None:
        self.path = os.path.abspath(path)
        self._connection: sqlite3.Connection | None = None
        self._pid = -1
        columns = ", ".join(
            f'"{name}" {"INTEGER" if name in _INTEGER_COLUMNS else "BLOB"}' for name in MANIFEST_COLUMNS
        )
        with self.connection:
            # selected_index: the entry's position among the selected ones, the index of a CohortDataset
            self.connection.execute(f"CREATE TABLE IF NOT EXISTS manifest ({columns}, selected_index INTEGER)")
            self.connection.execute("CREATE INDEX IF NOT EXISTS by_selected ON manifest (selected_index)")
        names = [row[1] for row in self.connection.execute("PRAGMA table_info(manifest)")]
        if names[: len(MANIFEST_COLUMNS)] != list(MANIFEST_COLUMNS):
            raise ValueError(f"{self.path} holds another table 'manifest' (columns {names}).")
        self._length = self.connection.execute("SELECT COUNT(*) FROM manifest").fetchone()[0]

    @property
    def connection(self) -> sqlite3.Connection:
        """This process's connection (a forked loader worker opens its own)."""
        if self._connection is None or self._pid != os.getpid():
            self._connection = sqlite3.connect(self.path, check_same_thread=False)
            # a scratch file of the run: a crash loses the run, never data, so the journal is not worth its writes
            self._connection.execute("PRAGMA journal_mode=OFF")
            self._connection.execute("PRAGMA synchronous=OFF")
            self._pid = os.getpid()
        return self._connection

    def __getstate__(self) -> dict:
        return {**self.__dict__, "_connection": None, "_pid": -1}

    def close(self) -> None:
        """Close this process's connection (the next access opens it again)."""
        if self._connection is not None and self._pid == os.getpid():
            self._connection.close()
        self._connection = None

    def __len__(self) -> int:
        return self._length

    def __getitem__(self, index: int) -> ManifestEntry:  # type: ignore[override]
        if not -self._length <= index < self._length:
            raise IndexError(f"manifest index {index} out of range for {self._length} entries.")
        index %= self._length
        row = self.connection.execute(f"SELECT {_QUOTED_COLUMNS} FROM manifest WHERE rowid = ?", (index + 1,)).fetchone()
        return _entry(row)

    def __iter__(self) -> Iterator[ManifestEntry]:
        return self.where()

    def where(self, status: str | None = None) -> Iterator[ManifestEntry]:
        """The entries in order, all or those of one status, read a chunk at a time."""
        last = 0
        condition = "" if status is None else "AND status = ?"
        while True:
            rows = self.connection.execute(
                f"SELECT rowid, {_QUOTED_COLUMNS} FROM manifest WHERE rowid > ? {condition} ORDER BY rowid LIMIT {_STORE_CHUNK}",
                (last,) if status is None else (last, _cell(status)),
            ).fetchall()
            if not rows:
                return
            last = rows[-1][0]
            yield from (_entry(row[1:]) for row in rows)

    def append(self, entries: Iterable[ManifestEntry]) -> None:
        """Add entries at the end, a chunk per transaction."""
        chunk: list[tuple] = []
        marks = ", ".join("?" * len(MANIFEST_COLUMNS))
        for entry in itertools.chain(entries, [None]):
            if entry is not None:
                chunk.append(tuple(_cell(getattr(entry, name)) for name in MANIFEST_COLUMNS))
            if chunk and (entry is None or len(chunk) == _STORE_CHUNK):
                with self.connection:
                    self.connection.executemany(f"INSERT INTO manifest ({_QUOTED_COLUMNS}) VALUES ({marks})", chunk)
                self._length += len(chunk)
                chunk = []

    def update(self, index: int, entry: ManifestEntry) -> None:
        """Write ``entry`` over the entry at ``index``."""
        assignments = ", ".join(f'"{name}" = ?' for name in MANIFEST_COLUMNS)
        with self.connection:
            self.connection.execute(
                f"UPDATE manifest SET {assignments} WHERE rowid = ?",
                (*(_cell(getattr(entry, name)) for name in MANIFEST_COLUMNS), index + 1),
            )

    def indices_sharing(self, column: str) -> Iterator[list[int]]:
        """Indices of the selected entries that share a non-empty value of ``column`` (e.g. SOPInstanceUID), per
        value, each group in order."""
        if column not in MANIFEST_COLUMNS:
            raise ValueError(f"column must be one of {MANIFEST_COLUMNS}, got {column!r}.")
        groups = self.connection.execute(
            f'SELECT group_concat(rowid - 1) FROM (SELECT rowid, "{column}" AS value FROM manifest '
            f'WHERE status = ? AND length("{column}") > 0 ORDER BY rowid) GROUP BY value HAVING COUNT(*) > 1',
            (_cell(SELECTED),),
        )
        for (indices,) in groups.fetchall():
            yield sorted(int(i) for i in indices.split(","))  # group_concat promises no order

    def set_selected_status(self, selected_indices: Iterable[int], status: str) -> None:
        """Set the status of some selected entries, given by their selected index (as the report marks the images
        it processed)."""
        with self.connection:
            self.connection.executemany(
                "UPDATE manifest SET status = ? WHERE selected_index = ?",
                ((_cell(status), int(i)) for i in selected_indices),
            )

    def index_selected(self) -> int:
        """Number the selected entries in order (:class:`SelectedEntries`); returns how many there are."""
        selected, last = 0, 0
        with self.connection:
            self.connection.execute("UPDATE manifest SET selected_index = NULL")
            while True:
                rowids = [row[0] for row in self.connection.execute(
                    f"SELECT rowid FROM manifest WHERE rowid > ? AND status = ? ORDER BY rowid LIMIT {_STORE_CHUNK}",
                    (last, _cell(SELECTED)))]
                if not rowids:
                    return selected
                self.connection.executemany("UPDATE manifest SET selected_index = ? WHERE rowid = ?",
                                            zip(range(selected, selected + len(rowids)), rowids))
                selected, last = selected + len(rowids), rowids[-1]

    def selected(self) -> SelectedEntries:
        """The selected entries, numbered by the last :meth:`index_selected`."""
        return SelectedEntries(self)


class SelectedEntries(Sequence[ManifestEntry]):
    """The selected entries of a :class:`ManifestStore`, by their ``selected_index``.

    Args:
        store: the manifest.
    """

    def __init__(self, store: ManifestStore) -> None:
        self.store = store
        self._length = store.connection.execute("SELECT COUNT(selected_index) FROM manifest").fetchone()[0]

    def __len__(self) -> int:
        return self._length

    def __getitem__(self, index: int) -> ManifestEntry:  # type: ignore[override]
        return self.store[self.manifest_index(index)]

    def manifest_index(self, index: int) -> int:
        """The manifest index of the ``index``-th selected entry.

        Raises:
            IndexError: for an index outside ``[0, len)``.
        """
        row = self.store.connection.execute(
            "SELECT rowid - 1 FROM manifest WHERE selected_index = ?", (int(index),)
        ).fetchone()
        if row is None:
            raise IndexError(f"selected index {index} out of range for {self._length} entries.")
        return row[0]


def _identity(folder: str) -> tuple[int, int]:
    # the same folder by any path (relative, through a link)
    st = os.stat(folder)
    return st.st_dev, st.st_ino


def walk_archive_files(root: str, exclude: Sequence[str] = ()) -> Iterator[str]:
    """Every file below ``root`` that belongs to the archive, in sorted path order (the walk of :func:`scan_archive`),
    one folder in memory at a time.

    Folders written by :func:`~monai_cae.reports.write_report` (holding :data:`REPORT_MARKER`), staging folders of a
    killed run and the folders in ``exclude`` are left out with everything below them. Links, FIFOs and other special
    files are listed as they are found: the caller decides what to open.

    Args:
        root: the archive folder.
        exclude: folders not to list.

    Yields:
        The paths, joined to ``root``.
    """
    excluded = {_identity(folder) for folder in exclude if os.path.isdir(folder)}
    for folder, dirs, names in os.walk(root):
        written = REPORT_MARKER in names or _STAGING_FOLDER.match(os.path.basename(folder))
        if written or (excluded and _identity(folder) in excluded):
            dirs.clear()  # nor anything below it
            continue
        dirs.sort()
        yield from (os.path.join(folder, n) for n in sorted(names))


def list_archive_files(root: str, exclude: Sequence[str] = ()) -> list[str]:
    """The files of :func:`walk_archive_files` as a list."""
    return list(walk_archive_files(root, exclude))


def _folder_ids(relative: str) -> tuple[str, str]:
    parts = relative.split(os.sep)[:-1]
    return (parts[0] if parts else "", parts[1] if len(parts) > 1 else "")


def _itk_shape(path: str) -> tuple[int, ...]:
    itk, has_itk = optional_import("itk")
    if not has_itk:
        raise UnusableImageError("no_decoder", f"reading {os.path.splitext(path)[1]} needs the itk package")
    io = itk.ImageIOFactory.CreateImageIO(path, itk.CommonEnums.IOFileMode_ReadMode)
    if io is None:
        raise UnusableImageError("corrupt", "ITK cannot read this file's header")
    io.SetFileName(path)
    io.ReadImageInformation()
    # ITK counts x (columns) first
    shape = tuple(int(io.GetDimensions(i)) for i in reversed(range(io.GetNumberOfDimensions())))
    components = int(io.GetNumberOfComponents())
    return shape + ((components,) if components > 1 else ())


def read_image_shape(path: str) -> tuple[str, tuple[int, ...]]:
    """Format and declared shape of a NIfTI, PIL (PNG, JPEG, BMP, TIFF) or ITK (MHA, NRRD) file, from its header.

    No pixel is decoded, so that the shape can be checked before a file that declares gigabytes is loaded.

    Args:
        path: the file (its extension selects the reader).

    Returns:
        ``("nifti", shape)`` in NIfTI's order (x, y, ...), or ``("image", shape)`` rows first, with a frame axis for
        multi-frame PIL images and a component axis for multi-component ITK images.

    Raises:
        UnusableImageError: ``"unreadable"``, ``"corrupt"``, ``"no_decoder"`` (ITK formats without itk) or
            ``"too_large"`` (an image Pillow itself refuses as a decompression bomb).
    """
    lower = path.lower()
    try:
        if lower.endswith(NIFTI_EXTENSIONS):
            import nibabel

            return "nifti", tuple(int(s) for s in nibabel.load(path).shape)
        if lower.endswith(ITK_EXTENSIONS):
            return "image", _itk_shape(path)
        from PIL import Image

        try:
            with Image.open(path) as img:
                frames = getattr(img, "n_frames", 1)
                return "image", (img.size[1], img.size[0]) + ((frames,) if frames > 1 else ())
        except Image.DecompressionBombError as e:
            raise UnusableImageError("too_large", f"Pillow refuses it as a decompression bomb ({e})") from e
    except UnusableImageError:
        raise
    except OSError as e:
        if isinstance(e, (PermissionError, FileNotFoundError, IsADirectoryError)):
            raise UnusableImageError("unreadable", f"{type(e).__name__}: {e.strerror or e}") from e
        raise UnusableImageError("corrupt", f"damaged image file ({type(e).__name__}: {e})") from e
    except Exception as e:
        raise UnusableImageError("corrupt", f"damaged image file ({type(e).__name__}: {e})") from e


def _probe_image_file(entry: ManifestEntry, max_pixels: int) -> None:
    entry.format, shape = read_image_shape(entry.path)
    # a 2D NIfTI may carry singleton trailing axes (x, y, 1[, 1])
    while len(shape) > 2 and shape[-1] == 1:
        shape = shape[:-1]
    if len(shape) > 2:
        raise UnusableImageError("volume_3d", f"image of shape {shape} where a 2D radiograph is expected")
    if len(shape) < 2 or min(shape) == 0:
        raise UnusableImageError("empty_image", f"zero-sized image (shape {shape})")
    check_image_size(shape, max_pixels, "the header")
    entry.rows, entry.columns = shape if entry.format != "nifti" else shape[::-1]


def _matches(value: str, accepted: Sequence[str] | None) -> bool:
    # a missing tag passes a filter: many archives leave ViewPosition or BodyPartExamined empty
    return accepted is None or not value or value.upper() in {a.upper() for a in accepted}


def _probe_dicom(
    entry: ManifestEntry,
    modalities: Sequence[str] | None,
    views: Sequence[str] | None,
    body_parts: Sequence[str] | None,
    max_pixels: int,
) -> None:
    ds = read_dicom_header(entry.path, max_pixels)
    entry.format = "dicom"
    for name, value in header_fields(ds).items():
        setattr(entry, name, value)
    meta = getattr(ds, "file_meta", None)
    entry.TransferSyntaxUID = str(meta.get("TransferSyntaxUID", "") if meta is not None else "")
    entry.rows, entry.columns = int(ds.get("Rows", 0) or 0), int(ds.get("Columns", 0) or 0)
    problem = dicom_image_problem(ds, max_pixels)
    if problem is not None:
        raise problem
    if modalities is not None and entry.Modality.upper() not in {m.upper() for m in modalities}:
        raise UnusableImageError(
            "modality", f"modality {entry.Modality or '(none)'} is not one of {', '.join(modalities)}"
        )
    if not _matches(entry.ViewPosition, views):
        raise UnusableImageError("view", f"view position {entry.ViewPosition} is not one of {', '.join(views)}")
    if not _matches(entry.BodyPartExamined, body_parts):
        raise UnusableImageError(
            "body_part", f"body part {entry.BodyPartExamined} is not one of {', '.join(body_parts)}"
        )


def _probe(
    path: str, root: str, modalities: Sequence[str] | None, views: Sequence[str] | None,
    body_parts: Sequence[str] | None, max_pixels: int,
) -> ManifestEntry:
    # the path stays as found, to open the file; the id goes into the outputs, which are UTF-8
    relative = display_text(os.path.relpath(path, root))
    entry = ManifestEntry(path=path, image_id=relative)
    try:
        try:
            # opening a FIFO or a device would block or never end; stat follows links: a broken one fails here
            if not stat.S_ISREG(os.stat(path).st_mode):
                raise UnusableImageError("unreadable", "not a regular file (FIFO, socket or device)")
            dicom = is_dicom_file(path)  # content before name: a DICOM export may be called .png
        except OSError as e:
            raise UnusableImageError("unreadable", f"{type(e).__name__}: {e.strerror or e}") from e
        lower = path.lower()
        if not dicom and lower.endswith(NIFTI_EXTENSIONS + PIL_EXTENSIONS + ITK_EXTENSIONS):
            entry.PatientID, entry.StudyInstanceUID = _folder_ids(relative)
            if len(entry.StudyInstanceUID) == 8 and entry.StudyInstanceUID.isdigit():
                entry.StudyDate = entry.StudyInstanceUID  # a <patient>/<YYYYMMDD>/ layout dates the study
            _probe_image_file(entry, max_pixels)
        else:
            _probe_dicom(entry, modalities, views, body_parts, max_pixels)
    except UnusableImageError as e:
        entry.skip(e)
    except Exception as e:  # a value no reader foresaw (e.g. Rows "1A"): one skipped file, never a failed scan
        entry.skip(UnusableImageError("corrupt", f"invalid header ({type(e).__name__}: {e})"))
    return entry


def probe_file(
    path: str,
    root: str | None = None,
    modalities: Sequence[str] | None = RADIOGRAPH_MODALITIES,
    views: Sequence[str] | None = None,
    body_parts: Sequence[str] | None = CHEST_BODY_PARTS,
    max_pixels: int = DEFAULT_MAX_PIXELS,
) -> ManifestEntry:
    """Describe one file as :func:`scan_archive` does, for callers that get images one at a time (a server).

    Args:
        path: the file.
        root: folder the image id is relative to (and, for files without DICOM header, whose first two folders are
            patient and study); the file's own folder when omitted.
        modalities, views, body_parts: DICOM selection, as in :func:`scan_archive`.
        max_pixels: the largest image accepted, as in :func:`scan_archive`.

    Returns:
        The entry: ``"selected"``, or ``"skipped"`` with a reason code and a specific detail. Never raises for a bad
        file.

    Raises:
        ValueError: for a ``max_pixels`` below 1.
    """
    max_pixels = validate_max_pixels(max_pixels)
    folder = os.path.dirname(os.path.abspath(path)) if root is None else root
    return _probe(path, folder, modalities, views, body_parts, max_pixels)


def _probe_files(
    paths: Iterator[str], probe: Callable[[str], ManifestEntry], num_workers: int | None
) -> Iterator[ManifestEntry]:
    # header reads are independent, one file at a time, so they spread over processes like the decoding; the entries
    # come back in walk order
    block = list(itertools.islice(paths, _PROBE_BLOCK))
    chunks = -(-len(block) // _PROBE_CHUNK)
    workers = default_num_workers(chunks) if num_workers is None else min(num_workers, chunks)
    if workers < 2:
        yield from map(probe, itertools.chain(block, paths))
        return
    with ProcessPoolExecutor(workers) as pool:
        while block:
            yield from pool.map(probe, block, chunksize=_PROBE_CHUNK)
            block = list(itertools.islice(paths, _PROBE_BLOCK))


def _mark_duplicates(entries: Iterable[ManifestEntry]) -> None:
    copies: dict[str, list[ManifestEntry]] = {}
    for entry in entries:
        if entry.status == SELECTED and entry.SOPInstanceUID:
            copies.setdefault(entry.SOPInstanceUID, []).append(entry)
    for same in copies.values():
        # a truncated copy is smaller than the whole file, and its header alone does not show the cut: the largest
        # copy is kept (the first in path order among equals), so that the good image is never the one dropped
        kept = max(same, key=lambda e: os.path.getsize(e.path))
        for entry in same:
            if entry is not kept:
                entry.skip(UnusableImageError("duplicate", f"same SOPInstanceUID as {kept.image_id}, a larger or equal copy"))


def _pseudonymize_entry(entry: ManifestEntry, key: str) -> ManifestEntry:
    entry.image_id = pseudonymize(entry.SOPInstanceUID or entry.image_id, key, prefix="I-")
    entry.PatientID = pseudonymize(entry.PatientID, key, prefix="P-")
    for name in ("StudyInstanceUID", "SeriesInstanceUID", "SOPInstanceUID"):
        setattr(entry, name, pseudonymize(getattr(entry, name), key))
    return entry


def scan_archive(
    root: str,
    modalities: Sequence[str] | None = RADIOGRAPH_MODALITIES,
    views: Sequence[str] | None = None,
    body_parts: Sequence[str] | None = CHEST_BODY_PARTS,
    pseudonymize_key: str | None = None,
    progress: bool = True,
    exclude: Sequence[str] = (),
    max_pixels: int = DEFAULT_MAX_PIXELS,
    store: str | None = None,
    num_workers: int | None = None,
) -> list[ManifestEntry] | ManifestStore:
    """Scan an archive folder recursively and describe every file, reading headers only.

    Files are recognised by content (DICOM with or without ``.dcm``, with or without preamble) or by extension
    (NIfTI, PNG/JPEG/BMP/TIFF, MHA/MHD/NRRD). DICOM files are selected when they hold one 2D frame that can be
    decoded, their Modality is one of ``modalities`` and, when given, their ViewPosition / BodyPartExamined are
    among ``views`` / ``body_parts`` (an empty tag passes; the default selects chest radiographs). The modality and
    view filters do not apply to non-DICOM images, which carry no such tags. Files holding the same SOPInstanceUID
    are one image: the largest copy is kept (a truncated copy is smaller), the others are duplicates. An image that
    declares more than ``max_pixels`` pixels (in its header, or in a deflated data set that inflates beyond it) is
    refused as ``"too_large"`` before anything is decoded or inflated.
    Every other file is kept in the manifest as skipped, with a reason code and a specific explanation.

    Folders written by :func:`~monai_cae.reports.write_report` are not archive content and are not read at all:
    report folders (they hold :data:`REPORT_MARKER`), staging folders of a run that was killed (``.<name>.tmp-*``)
    and the folders in ``exclude`` (the run's own output folder). File names that are not UTF-8 are read as they
    are and written into the outputs with escapes (:func:`display_text`).

    Args:
        root: archive folder.
        modalities: accepted DICOM modalities; ``None`` accepts any.
        views: accepted view positions (e.g. ``["PA", "AP"]``); ``None`` accepts any.
        body_parts: accepted body parts, :data:`CHEST_BODY_PARTS` by default; ``None`` accepts any.
        pseudonymize_key: when given, PatientID and the UIDs are replaced by keyed hashes
            (:func:`monai_cae.data.pseudonymize`) and the image id is derived from the SOPInstanceUID (or the
            relative path); :func:`write_manifest` can then leave the paths out, so that no identifier of the
            archive reaches the outputs.
        progress: show a progress bar.
        exclude: folders not to read, with everything below them (e.g. the report's output folder when it is inside
            the archive).
        max_pixels: the largest image accepted, :data:`~monai_cae.data.unusable.DEFAULT_MAX_PIXELS` by default.
        store: an SQLite file to write the manifest to as the scan goes (:class:`ManifestStore`), so that its
            memory does not grow with the archive; ``None`` keeps it in memory.
        num_workers: processes reading the headers, a chunk of files each at a time;
            :func:`~monai_cae.data.default_num_workers` when ``None``, 0 or 1 to read in this process. An archive of
            32 files or fewer (one chunk) is always read in this process.

    Returns:
        One entry per file, in sorted path order: a list, or the :class:`ManifestStore` (its selected entries
        numbered, :meth:`ManifestStore.selected`).

    Raises:
        FileNotFoundError: when ``root`` is not a folder.
        FileExistsError: when ``store`` already holds a manifest.
        ValueError: for a ``max_pixels`` below 1 or a negative ``num_workers``.
    """
    max_pixels = validate_max_pixels(max_pixels)
    validate_num_workers(num_workers)
    if not os.path.isdir(root):
        raise FileNotFoundError(f"archive folder not found: {os.path.abspath(root)}.")
    # counted first, for a progress bar that shows how far the scan is: a walk costs little beside the header reads
    total = sum(1 for _ in walk_archive_files(root, exclude)) if progress else None
    probe = functools.partial(
        _probe, root=root, modalities=modalities, views=views, body_parts=body_parts, max_pixels=max_pixels)
    probed = tqdm(_probe_files(walk_archive_files(root, exclude), probe, num_workers), total=total,
                  desc="Scanning headers", unit="file", disable=not progress)
    if pseudonymize_key is not None:
        probed = (_pseudonymize_entry(entry, pseudonymize_key) for entry in probed)
    if store is None:
        entries = list(probed)
        _mark_duplicates(entries)  # hashed UIDs are equal exactly when the originals are
        return entries
    manifest = ManifestStore(store)
    if len(manifest):
        raise FileExistsError(f"{manifest.path} already holds a manifest of {len(manifest)} entries.")
    manifest.append(probed)
    for indices in manifest.indices_sharing("SOPInstanceUID"):
        copies = [manifest[i] for i in indices]
        _mark_duplicates(copies)
        for index, entry in zip(indices, copies):
            manifest.update(index, entry)
    manifest.index_selected()
    return manifest


def write_manifest(entries: Iterable[ManifestEntry], path: str, include_paths: bool = True) -> None:
    """Write entries as CSV (columns :data:`MANIFEST_COLUMNS`, cells as :func:`csv_cell` writes them), atomically.

    Args:
        entries: manifest entries.
        path: destination file.
        include_paths: write the file paths; when false the ``path`` column is left empty (paths often hold
            patient names or IDs, so pseudonymized reports leave them out and rely on ``image_id``).
    """

    def write(f) -> None:
        writer = csv.DictWriter(f, fieldnames=MANIFEST_COLUMNS)
        writer.writeheader()
        for e in entries:
            # a flat getattr: dataclasses.asdict deep-copies every field, seconds for a large archive
            writer.writerow({**{name: csv_cell(getattr(e, name)) for name in MANIFEST_COLUMNS},
                             **({} if include_paths else {"path": ""})})

    atomic_write(path, write)


def read_manifest(path: str) -> list[ManifestEntry]:
    """Read a manifest written by :func:`write_manifest` (the quote :func:`csv_cell` put before a formula is taken
    away; a file name that was not UTF-8 keeps its escapes).

    Args:
        path: the CSV file.

    Returns:
        The entries.

    Raises:
        ValueError: when the columns are not :data:`MANIFEST_COLUMNS`.
    """
    with open(path, newline="") as f:
        reader = csv.DictReader(f)
        if tuple(reader.fieldnames or ()) != MANIFEST_COLUMNS:
            raise ValueError(f"{path} is not a manifest: columns {reader.fieldnames}, expected {MANIFEST_COLUMNS}.")
        return [
            ManifestEntry(**{**{k: _read_cell(v) for k, v in row.items()}, "rows": int(row["rows"]),
                             "columns": int(row["columns"])})
            for row in reader
        ]
