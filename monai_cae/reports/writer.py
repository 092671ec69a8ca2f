"""Writing a cohort report folder: tables, report.json, report.html, built a part at a time and published at once."""

from __future__ import annotations

import csv
import dataclasses
import itertools
import json
import os
import re
import shutil
import socket
import sqlite3
import uuid
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Mapping, MutableMapping, Sequence

import numpy as np

from monai_cae.data.cohort import CohortDataset
from monai_cae.data.manifest import (
    PROCESSED,
    REPORT_MARKER,
    SKIPPED,
    ManifestStore,
    csv_cell,
    display_text,
    write_manifest,
)
from monai_cae.data.unusable import UnusableImageError
from monai_cae.inference import StrataAssignment, write_assignments
from monai_cae.networks.nets import ContrastiveAutoEncoder
from monai_cae.utils.io import atomic_write, publish_folder

from .explain import ReportTally
from .figures import data_uri, decode_prototypes, image_png, latent_map_png, stratum_latent_norms
from .html import THUMBNAIL_WIDTH, PatientTables, render_report_html
from .options import ReportOptions
from .overlays import cluster_overlays
from .strata_names import read_stratum_names
from .tables import PATIENT_COLUMNS, image_columns, image_rows, outlier_threshold, patient_rows, reference_similarities

__all__ = [
    "REPORT_FILES",
    "NoImagesError",
    "ReportStaging",
    "build_report",
    "check_output_dir",
    "publish_folder",
    "raise_without_images",
    "write_report",
]

REPORT_FILES = (
    "manifest.csv", "skipped.csv", "embeddings.npy", "assignments.csv", "strata_per_image.csv",
    "strata_per_patient.csv", "report.json", "report.html",
)


class NoImagesError(RuntimeError):
    """No image of the archive could be processed (the report folder still lists every file and why)."""


def check_output_dir(output_dir: str, overwrite: bool = False) -> None:
    """Fail early, before any work, when the report cannot be written where asked.

    Args:
        output_dir: report folder.
        overwrite: whether an existing report may be replaced.

    Raises:
        FileExistsError: when ``output_dir`` is a file, or a non-empty folder and ``overwrite`` is false.
        PermissionError: when its parent folder cannot be written.
    """
    path = os.path.abspath(output_dir)
    if os.path.exists(path) and not os.path.isdir(path):
        raise FileExistsError(f"output_dir {path} is a file, not a folder.")
    if os.path.isdir(path) and os.listdir(path) and not overwrite:
        raise FileExistsError(
            f"output_dir {path} already holds a report; pass --overwrite (bundle: --overwrite True) to replace it."
        )
    parent = os.path.dirname(path)
    existing = parent
    while not os.path.isdir(existing):
        existing = os.path.dirname(existing)
    if not os.access(existing, os.W_OK | os.X_OK):
        raise PermissionError(f"cannot write the report: {existing} is not writable.")


def _staging_folder(target: str) -> str:
    # the process and host that own it are in the name, so that a later run can tell a killed run's folder
    name = f".{os.path.basename(target)}.tmp-{os.getpid()}-{socket.gethostname()}-{uuid.uuid4().hex}"
    return os.path.join(os.path.dirname(target), name)


def _running(pid: int) -> bool:
    try:
        os.kill(pid, 0)  # signal 0 only asks whether the process exists
    except ProcessLookupError:
        return False
    except PermissionError:  # it exists, and is another user's
        pass
    return True


def _remove_stale_staging(target: str) -> None:
    # a run killed before it published leaves its staging folder, which holds patient data, beside the output; the
    # folders of this host's runs whose process is gone are removed (a run still going, or another machine's on a
    # shared disk, is left alone)
    stale = re.compile(rf"^\.{re.escape(os.path.basename(target))}\.tmp-(\d{{1,9}})-(.+)-[0-9a-f]{{32}}(\.old)?$")
    parent, host = os.path.dirname(target), socket.gethostname()
    for name in os.listdir(parent):
        match = stale.match(name)
        if match is None or match[2] != host or _running(int(match[1])):
            continue
        if match[3] and not os.path.isdir(target):
            continue  # the previous report, moved aside by a run killed before the new one took its place
        shutil.rmtree(os.path.join(parent, name), ignore_errors=True)


def _folder_mode() -> int:
    # the rights os.mkdir gives under the umask, which can only be read by setting it (briefly to private)
    umask = os.umask(0o077)
    os.umask(umask)
    return 0o777 & ~umask




class ReportStaging:
    """The hidden staging folder a report is written into beside ``output_dir``, then published at once.

    It is private to the user until it is published (then it gets the usual umask rights), and holds
    :data:`~monai_cae.data.manifest.REPORT_MARKER` from the start, so that a scan of an archive that holds it never
    reads it. Its ``.work`` folder (the run's scratch files: the manifest and the assignment on disk) is removed
    before publishing. Staging folders that killed runs of this host left are removed first; on any error, this one
    is removed too, so that no patient data stays behind.

    Args:
        output_dir: the report folder.
        overwrite: whether :meth:`publish` may replace an existing report.
    """

    def __init__(self, output_dir: str, overwrite: bool = False) -> None:
        self.target, self.overwrite = os.path.abspath(output_dir), overwrite
        os.makedirs(os.path.dirname(self.target), exist_ok=True)
        _remove_stale_staging(self.target)
        self.folder = _staging_folder(self.target)
        os.mkdir(self.folder, 0o700)
        try:
            # first: a scan of an archive that holds this folder must never read it, even half-written
            atomic_write(os.path.join(self.folder, REPORT_MARKER), lambda f: f.write(
                "Written by monai-cae-report. Archive scans (monai_cae.data.scan_archive) do not read this folder.\n"))
            os.mkdir(self.work(), 0o700)
        except BaseException:
            self.discard()
            raise

    def work(self, *names: str) -> str:
        """A path in the scratch folder."""
        return os.path.join(self.folder, ".work", *names)

    def path(self, *names: str) -> str:
        """A path in the report."""
        return os.path.join(self.folder, *names)

    def publish(self) -> None:
        """Remove the scratch files and put the report in place of ``output_dir`` (:func:`publish_folder`)."""
        shutil.rmtree(self.work(), ignore_errors=True)
        os.chmod(self.folder, _folder_mode())
        publish_folder(self.folder, self.target, self.overwrite)

    def discard(self) -> None:
        """Remove the staging folder and all it holds."""
        shutil.rmtree(self.folder, ignore_errors=True)

    def __enter__(self) -> ReportStaging:
        return self

    def __exit__(self, kind: type | None, *_: object) -> None:
        if kind is not None:
            self.discard()


class _FirstImageOfFilm(MutableMapping):
    """The first image id of each film (digest), in an SQLite table: what :func:`image_rows` needs to name copies,
    without a dictionary as large as the archive."""

    def __init__(self, db: sqlite3.Connection) -> None:
        self.db = db
        self.db.execute("CREATE TABLE films (film TEXT PRIMARY KEY, image_id BLOB)")

    def __getitem__(self, film: str) -> str:
        row = self.db.execute("SELECT image_id FROM films WHERE film = ?", (_key(film),)).fetchone()
        if row is None:
            raise KeyError(film)
        return row[0].decode("utf-8", "surrogateescape")

    def __setitem__(self, film: str, image_id: str) -> None:
        self.db.execute("INSERT OR REPLACE INTO films VALUES (?, ?)", (_key(film), image_id.encode("utf-8", "surrogateescape")))

    def __delitem__(self, film: str) -> None:
        self.db.execute("DELETE FROM films WHERE film = ?", (_key(film),))

    def __iter__(self) -> Iterator[str]:
        return (row[0] for row in self.db.execute("SELECT film FROM films"))

    def __len__(self) -> int:
        return self.db.execute("SELECT COUNT(*) FROM films").fetchone()[0]


def _key(text: str) -> bytes:
    # UTF-32 big-endian bytes compare as Python compares the text, surrogate escapes included
    return text.encode("utf-32-be", "surrogatepass")


class _CsvRows:
    """A CSV table written a row at a time: numbers formatted, never quoted; text through :func:`csv_cell`."""

    def __init__(self, path: str, columns: Sequence[str]) -> None:
        self.file = open(path, "x", newline="", encoding="utf-8")
        self.writer = csv.DictWriter(self.file, fieldnames=list(columns), extrasaction="ignore")
        self.writer.writeheader()

    def write(self, row: Mapping) -> None:
        self.writer.writerow({k: f"{v:.6f}" if isinstance(v, float) else int(v) if isinstance(v, bool) else csv_cell(v)
                              for k, v in row.items()})

    def close(self) -> None:
        self.file.close()


class _Parts:
    """Parts of an assignment that can be iterated again, each changed by ``change`` as it is read."""

    def __init__(self, parts: Iterable[StrataAssignment], change: Callable[[StrataAssignment], StrataAssignment]):
        self.parts, self.change = parts, change

    def __iter__(self) -> Iterator[StrataAssignment]:
        return (self.change(part) for part in self.parts)


def _finite(part: StrataAssignment) -> np.ndarray:
    return np.all([np.isfinite(a).all(1) for a in (part.embeddings, part.similarities, part.probabilities)], axis=0)


_PATIENTS_PLACE = "\0patients\0"  # no text of a report holds a NUL


def _report_json(path: str, report: Mapping, patients_path: str, has_patients: bool) -> None:
    # json.dump(report, indent=1) of the report with its patients, the patients copied from the file they were
    # written to one at a time (each already indented as the second level of the report)
    files = report["files"]
    text = json.dumps({**{k: v for k, v in report.items() if k != "files"}, "patients": _PATIENTS_PLACE,
                       "files": files}, indent=1)
    before, after = text.split(json.dumps(_PATIENTS_PLACE))
    with open(path, "x", encoding="utf-8") as f:
        f.write(before)
        if has_patients:
            f.write("[\n")
            with open(patients_path, encoding="utf-8") as patients:
                shutil.copyfileobj(patients, f)
            f.write("\n ]")
        else:
            f.write("[]")
        f.write(after)


def build_report(
    staging: ReportStaging,
    manifest: ManifestStore,
    assignment: StrataAssignment | Iterable[StrataAssignment],
    dataset: CohortDataset,
    network: ContrastiveAutoEncoder,
    skipped: Iterable[tuple[int, str, str]] = (),
    options: ReportOptions | None = None,
) -> dict:
    """Write the files of a cohort report into its staging folder, reading the assignment a part at a time.

    Files: ``manifest.csv`` (every file, final status), ``skipped.csv`` (every skipped file with reason code and
    detail), ``embeddings.npy`` and ``assignments.csv`` (as :func:`monai_cae.engines.write_assignments`),
    ``strata_per_image.csv``, ``strata_per_patient.csv``, ``report.json`` (:func:`~monai_cae.reports.report_content`:
    every stratum explained), ``report.html`` (self-contained, bounded in size whatever the archive's) and
    ``figures/`` (decoded prototypes, latent map). A model with a local branch adds ``cluster_maps.npy`` and, with
    thumbnails, ``figures/cluster_overlay_<index>.png`` shown in the page (the first ``max_overlays`` images). Text
    cells of the CSV files are written by :func:`~monai_cae.data.manifest.csv_cell` (never run as spreadsheet
    formulas). No header field other than :data:`monai_cae.data.HEADER_FIELDS` is ever read into the outputs.

    Memory does not grow with the archive but by a few numbers per image: the tables are written as the parts are
    read, the patients are grouped by an index of the scratch database, and the latent map draws a fixed sample.

    Args:
        staging: the report's staging folder (:meth:`ReportStaging.publish` publishes it).
        manifest: the archive's manifest; the statuses of the images are updated in it.
        assignment: the model's assignment of the images that loaded, in dataset order: one
            :class:`~monai_cae.inference.StrataAssignment`, or parts of it that can be iterated again (a
            :class:`~monai_cae.inference.StrataStore`). With ``digests``, pixel-identical copies are flagged
            (``duplicate_of``) and counted once in the shares; without, the report says copies were not looked for.
        dataset: the cohort (thumbnails and overlays are loaded again from it); its indices are the manifest's
            selected indices.
        network: the trained network.
        skipped: ``(index, reason, detail)`` of the selected images that failed to load
            (:attr:`monai_cae.data.CohortDataLoader.skipped`). Images whose latent is not finite join them as
            ``"non_finite"``.
        options: the report options.

    Returns:
        The content of ``report.json`` but its per-patient list (``strata_per_patient.csv`` has it too).
    """
    options = options or ReportOptions()
    entries = manifest.selected()
    assignment = [assignment] if isinstance(assignment, StrataAssignment) else assignment

    def skip(index: int, reason: str, detail: str) -> None:
        where = entries.manifest_index(index)
        entry = manifest[where]
        entry.skip(UnusableImageError(reason, detail))
        manifest.update(where, entry)

    for index, reason, detail in skipped:
        skip(index, reason, detail)
    prototypes = network.prototypes.detach().float().cpu().numpy()
    k, latent_size = prototypes.shape
    nearest, checked = [], True
    for part in assignment:
        # a latent that is not finite, from an input no check foresaw, would stop the PCA and the figures of the
        # whole cohort: the image is named in skipped.csv and the report goes on without it
        finite = _finite(part)
        for index in part.indices[~finite]:
            skip(int(index), "non_finite", "the model's latent of this image is not finite")
        manifest.set_selected_status(part.indices[finite], PROCESSED)
        nearest.append(part.similarities[finite].max(1) if finite.any() else np.zeros(0, np.float32))
        checked &= part.digests is not None
    threshold = outlier_threshold(
        np.concatenate(nearest) if nearest else np.zeros(0, np.float32), options.outlier_threshold,
        options.outlier_percentile, reference_similarities(options.reference_embeddings, prototypes),
    )
    del nearest
    finite_parts = _Parts(assignment, lambda part: part.select(_finite(part)))

    db = sqlite3.connect(staging.work("report.sqlite"))
    db.execute("PRAGMA journal_mode=OFF")
    # the index is built as rows arrive, so that reading by patient needs no sort of the whole table
    db.execute("CREATE TABLE images (patient BLOB, position INTEGER, row TEXT)")
    db.execute("CREATE INDEX by_patient ON images (patient, position)")
    first_of = _FirstImageOfFilm(db)
    tally = ReportTally(k, options.thumbnails_per_stratum, options.max_outliers)
    strata, outliers, overlay_parts = [], [], []
    image_table = _CsvRows(staging.path("strata_per_image.csv"), image_columns(k))
    try:
        for part in finite_parts:
            # an image without digest is its own film
            digests = None if part.digests is None else {i: d for i, d in zip(part.indices.tolist(), part.digests) if d}
            rows = image_rows(entries, part, threshold, digests if checked else None, first_of)
            for row in rows:
                image_table.write(row)
                db.execute("INSERT INTO images VALUES (?, ?, ?)",
                           (_key(row["patient_id"]), len(tally.similarity), json.dumps(row)))
                tally.add_image(row)
            strata.append(part.clusters)
            outliers.append(np.array([r["outlier"] for r in rows], dtype=bool))
            if part.cluster_maps is not None and options.thumbnails:
                room = options.max_overlays - sum(len(p) for p in overlay_parts)
                if room > 0:
                    overlay_parts.append(part.select(slice(0, room)))
        db.commit()
    finally:
        image_table.close()
    write_assignments(
        _Parts(finite_parts, lambda part: dataclasses.replace(part, ids=[csv_cell(i) for i in part.ids])),
        staging.folder, latent_size, k,
    )

    patient_table = _CsvRows(staging.path("strata_per_patient.csv"), PATIENT_COLUMNS)
    tables = PatientTables()
    patients_path = staging.work("patients.json")
    try:
        with open(patients_path, "x", encoding="utf-8") as patients_json:
            group: list[dict] = []
            rows_by_patient = (json.loads(text) for (text,) in db.execute(
                "SELECT row FROM images ORDER BY patient, position"))
            for row in itertools.chain(rows_by_patient, [None]):
                if group and (row is None or row["patient_id"] != group[0]["patient_id"]):
                    (patient,), timelines = patient_rows(group, k)
                    studies = timelines[patient["patient_id"]]
                    patient_table.write(patient)
                    tables.add(patient)
                    tally.add_patient(patient, studies, (r["stratum"] for r in group))
                    text = json.dumps({**patient, "studies": studies}, indent=1)
                    patients_json.write((",\n" if tally.patients > 1 else "") + "  " + text.replace("\n", "\n  "))
                    group = []
                if row is not None:
                    group.append(row)
    finally:
        patient_table.close()
        db.close()

    skipped_by_reason = Counter(e.reason for e in manifest.where(SKIPPED))
    write_manifest(manifest, staging.path("manifest.csv"), include_paths=not options.pseudonymized)
    write_manifest(manifest.where(SKIPPED), staging.path("skipped.csv"), include_paths=not options.pseudonymized)
    model_name = options.model_name or (os.path.basename(options.model_path) if options.model_path else "")
    stratum_names = options.stratum_names
    if stratum_names is None and options.model_path is not None:
        stratum_names = read_stratum_names(options.model_path)
    report = tally.content(
        threshold, latent_size=int(latent_size), files=len(manifest), skipped_by_reason=skipped_by_reason,
        model_name=display_text(model_name), stratum_names=stratum_names,
        options={"pseudonymized": options.pseudonymized, "thumbnails": options.thumbnails,
                 "duplicates_checked": checked},
    )
    report["files"] = list(REPORT_FILES)
    _report_json(staging.path("report.json"), report, patients_path, tally.patients > 0)

    embeddings = np.load(staging.path("embeddings.npy"), mmap_mode="r")
    strata_of = np.concatenate(strata) if strata else np.zeros(0, np.int64)
    decoded = decode_prototypes(network, options.device, stratum_latent_norms(embeddings, strata_of, k))
    # the files are seen on their own, outside the page: upscaled to a readable size
    prototype_pngs = [image_png(img, scale=max(1, THUMBNAIL_WIDTH // decoded.shape[-1])) for img in decoded]
    processed = len(embeddings)
    latent_png = latent_map_png(embeddings, strata_of, prototypes, np.concatenate(outliers)) if processed else None
    galleries = _galleries(tally, dataset) if options.thumbnails and processed else None
    overlays = (
        cluster_overlays(StrataAssignment.concatenate(overlay_parts, latent_size, k), dataset) if overlay_parts else {}
    )
    html = render_report_html(
        report, [data_uri(p) for p in prototype_pngs], galleries, data_uri(latent_png) if latent_png else None,
        [(f"image {index}", data_uri(png)) for index, png in overlays.items()], tables,
    )
    for j, png in enumerate(prototype_pngs):
        atomic_write(staging.path("figures", f"prototype_{j}.png"), lambda f, b=png: f.write(b), "wb")
    for index, png in overlays.items():
        atomic_write(staging.path("figures", f"cluster_overlay_{index}.png"), lambda f, b=png: f.write(b), "wb")
    if latent_png:
        atomic_write(staging.path("figures", "latent_map.png"), lambda f: f.write(latent_png), "wb")
    atomic_write(staging.path("report.html"), lambda f: f.write(html))
    return report


def _thumbnail(dataset: CohortDataset, row: Mapping) -> tuple[str, str] | None:
    # loaded again on its own, so that no image had to be kept while streaming; the model input at its own size,
    # which the page upscales without smoothing
    item = dataset[int(row["dataset_index"])]
    caption = f"similarity {row['similarity']:.3f}, patient {row['patient_id'] or '?'}"
    return (caption, data_uri(image_png(item["image"]))) if item["ok"] else None


def _galleries(tally: ReportTally, dataset: CohortDataset) -> dict[str, object]:
    def load(chosen: Sequence[tuple[int, Mapping]]) -> list[tuple[str, str]]:
        return [t for t in (_thumbnail(dataset, row) for _, row in chosen) if t is not None]

    exemplars, least = tally.stratum_examples()
    return {
        "exemplars": [load(s) for s in exemplars],
        "least_typical": [load(s) for s in least],
        "outliers": load(tally.outliers.sorted()),
    }


def write_report(
    assignment: StrataAssignment,
    dataset: CohortDataset,
    network: ContrastiveAutoEncoder,
    output_dir: str,
    skipped: Sequence[tuple[int, str, str]] = (),
    image_digests: Mapping[int, str] | None = None,
    options: ReportOptions | None = None,
    **changes: object,
) -> dict:
    """Write the report folder of a cohort assigned in memory: :func:`build_report` in a :class:`ReportStaging`,
    published at once.

    Args:
        assignment: the model's assignment of the images that loaded.
        dataset: the cohort (its ``manifest`` lists every file, its ``entries`` the selected ones); it is not
            changed.
        network: the trained network.
        output_dir: report folder.
        skipped: ``(index, reason, detail)`` of the selected images that failed to load.
        image_digests: digest of each image's model input by entry index (:func:`~monai_cae.inference.image_digest`),
            when ``assignment`` holds none; ``None`` (and none in ``assignment``) does not look for copies.
        options: the report options (:class:`~monai_cae.reports.ReportOptions`).
        changes: options to change in ``options``.

    Returns:
        The content of ``report.json`` but its per-patient list.

    Raises:
        FileExistsError: when ``output_dir`` holds a report and ``overwrite`` is false.
        NoImagesError: after writing the folder, when no image could be processed.
    """
    options = ReportOptions.of(options, **changes)
    check_output_dir(output_dir, options.overwrite)
    if image_digests is not None and assignment.digests is None:
        assignment = dataclasses.replace(
            assignment, digests=[image_digests.get(int(i)) for i in assignment.indices])
    with ReportStaging(output_dir, options.overwrite) as staging:
        manifest = ManifestStore(staging.work("manifest.sqlite"))
        manifest.append(dataset.manifest)
        manifest.index_selected()
        report = build_report(staging, manifest, assignment, dataset, network, skipped, options)
        manifest.close()
        staging.publish()
    return raise_without_images(report, output_dir)


def raise_without_images(report: dict, output_dir: str) -> dict:
    """``report``, once published; a report that processed no image raises.

    Raises:
        NoImagesError: when no image could be processed.
    """
    if not report["counts"]["processed"]:
        raise NoImagesError(
            f"no image could be processed ({report['counts']['files']} files, reasons "
            f"{report['counts']['skipped_by_reason']}); every file and why is listed in "
            f"{os.path.join(os.path.abspath(output_dir), 'skipped.csv')}."
        )
    return report
