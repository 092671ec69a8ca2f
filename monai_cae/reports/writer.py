"""Writing a cohort report: tables, report.json, report.html and figures, built a part of the assignment at a time."""

from __future__ import annotations

import csv
import dataclasses
import itertools
import json
import os
import shutil
import sqlite3
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Mapping, MutableMapping, Sequence
from dataclasses import dataclass, field

import numpy as np
import torch
from torch.utils.data import Subset

from monai_cae.data.cohort import CohortDataLoader, CohortDataset
from monai_cae.data.manifest import PROCESSED, SKIPPED, ManifestStore, csv_cell, display_text, write_manifest
from monai_cae.data.unusable import UnusableImageError
from monai_cae.inference import StrataAssignment, write_assignments
from monai_cae.networks.nets import ContrastiveAutoEncoder
from monai_cae.utils.io import atomic_write

from .explain import ReportTally
from .figures import data_uri, decode_prototypes, image_png, latent_map_png, latent_map_sample, mean_norm_per_stratum
from .html import THUMBNAIL_WIDTH, PatientTables, render_report_html
from .options import ReportOptions
from .overlays import cluster_overlays
from .staging import ReportStaging, check_output_dir, raise_without_images
from .strata_names import read_stratum_names
from .tables import (
    PATIENT_COLUMNS,
    OutlierThreshold,
    image_columns,
    image_rows,
    outlier_threshold,
    patient_rows,
    reference_similarities,
)

__all__ = ["REPORT_FILES", "build_report", "write_report"]

_THUMBNAIL_BATCH = 8
"""Thumbnails per batch when they are loaded again: small, so that a few dozen are shared among the decoding
processes."""

REPORT_FILES = (
    "manifest.csv", "skipped.csv", "embeddings.npy", "assignments.csv", "strata_per_image.csv",
    "strata_per_patient.csv", "report.json", "report.html",
)


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


@dataclass
class _PageData:
    """What the page draws of the images, gathered while they are written: a few numbers per image, and the latents
    of the latent map's sample only."""

    sample: np.ndarray
    strata: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))
    outliers: np.ndarray = field(default_factory=lambda: np.zeros(0, bool))
    norms: np.ndarray = field(default_factory=lambda: np.zeros(0))
    drawn: np.ndarray = field(default_factory=lambda: np.zeros((0, 0), np.float32))
    overlay_parts: list[StrataAssignment] = field(default_factory=list)


class _Builder:
    """The steps of :func:`build_report`, sharing the report's staging folder, manifest, options and tally."""

    def __init__(self, staging: ReportStaging, manifest: ManifestStore, dataset: CohortDataset,
                 network: ContrastiveAutoEncoder, options: ReportOptions) -> None:
        self.staging, self.manifest, self.dataset, self.network, self.options = (
            staging, manifest, dataset, network, options)
        self.entries = manifest.selected()
        self.prototypes = network.prototypes.detach().float().cpu().numpy()
        self.k, self.latent_size = self.prototypes.shape
        self.tally = ReportTally(self.k, options.thumbnails_per_stratum, options.max_outliers)
        self.tables = PatientTables()
        self.db = sqlite3.connect(staging.work("report.sqlite"))
        self.db.execute("PRAGMA journal_mode=OFF")  # a scratch file of the run
        # the index is built as rows arrive, so that reading by patient needs no sort of the whole table
        self.db.execute("CREATE TABLE images (patient BLOB, position INTEGER, row TEXT)")
        self.db.execute("CREATE INDEX by_patient ON images (patient, position)")

    def skip(self, index: int, reason: str, detail: str) -> None:
        where = self.entries.manifest_index(index)
        entry = self.manifest[where]
        entry.skip(UnusableImageError(reason, detail))
        self.manifest.update(where, entry)

    def mark_images(self, parts: Iterable[StrataAssignment], skipped: Iterable[tuple[int, str, str]]) -> tuple:
        """Statuses in the manifest; returns the outlier threshold, whether the copies were looked for and the
        number of images processed."""
        for index, reason, detail in skipped:
            self.skip(index, reason, detail)
        nearest, checked = [], True
        for part in parts:
            # a latent that is not finite, from an input no check foresaw, would stop the PCA and the figures of
            # the whole cohort: the image is named in skipped.csv and the report goes on without it
            finite = _finite(part)
            for index in part.indices[~finite]:
                self.skip(int(index), "non_finite", "the model's latent of this image is not finite")
            self.manifest.set_selected_status(part.indices[finite], PROCESSED)
            nearest.append(part.similarities[finite].max(1) if finite.any() else np.zeros(0, np.float32))
            checked &= part.digests is not None
        threshold = outlier_threshold(
            np.concatenate(nearest) if nearest else np.zeros(0, np.float32), self.options.outlier_threshold,
            self.options.outlier_percentile, reference_similarities(self.options.reference_embeddings, self.prototypes),
        )
        return threshold, checked, sum(len(n) for n in nearest)

    def write_images(
        self, parts: Iterable[StrataAssignment], threshold: OutlierThreshold, checked: bool, processed: int
    ) -> _PageData:
        """``strata_per_image.csv``, the assignment files, the rows kept by patient; returns what the page draws."""
        first_of = _FirstImageOfFilm(self.db)
        page = _PageData(latent_map_sample(processed))
        strata, outliers, norms, drawn = [], [], [], []
        start = 0
        table = _CsvRows(self.staging.path("strata_per_image.csv"), image_columns(self.k))
        try:
            for part in parts:
                # an image without digest is its own film
                digests = None if not checked else {i: d for i, d in zip(part.indices.tolist(), part.digests) if d}
                rows = image_rows(self.entries, part, threshold, digests, first_of)
                for row in rows:
                    table.write(row)
                    self.db.execute("INSERT INTO images VALUES (?, ?, ?)",
                                    (_key(row["patient_id"]), len(self.tally.similarity), json.dumps(row)))
                    self.tally.add_image(row)
                strata.append(part.clusters)
                outliers.append(np.array([r["outlier"] for r in rows], dtype=bool))
                norms.append(np.linalg.norm(part.embeddings.astype(np.float64), axis=1))
                chosen = page.sample[(page.sample >= start) & (page.sample < start + len(part))] - start
                drawn.append(part.embeddings[chosen])
                start += len(part)
                room = self.options.max_overlays - sum(len(p) for p in page.overlay_parts)
                if part.cluster_maps is not None and self.options.thumbnails and room > 0:
                    page.overlay_parts.append(part.select(slice(0, room)))
            self.db.commit()
        finally:
            table.close()
        # write_assignments writes the ids as they are: quoted here where they would read as a formula
        write_assignments(_Parts(parts, lambda part: dataclasses.replace(part, ids=[csv_cell(i) for i in part.ids])),
                          self.staging.folder, self.latent_size, self.k)
        if strata:
            page.strata, page.outliers, page.norms = (np.concatenate(a) for a in (strata, outliers, norms))
            page.drawn = np.concatenate(drawn)
        return page

    def write_patients(self) -> str:
        """``strata_per_patient.csv`` and the patients of ``report.json``, one patient at a time; returns the file
        holding the latter."""
        path = self.staging.work("patients.json")
        table = _CsvRows(self.staging.path("strata_per_patient.csv"), PATIENT_COLUMNS)
        try:
            with open(path, "x", encoding="utf-8") as patients:
                rows = (json.loads(text) for (text,) in self.db.execute(
                    "SELECT row FROM images ORDER BY patient, position"))
                for _, group in itertools.groupby(rows, key=lambda row: row["patient_id"]):
                    images = list(group)
                    (patient,), timelines = patient_rows(images, self.k)
                    studies = timelines[patient["patient_id"]]
                    table.write(patient)
                    self.tables.add(patient)
                    self.tally.add_patient(patient, studies, (r["stratum"] for r in images))
                    text = json.dumps({**patient, "studies": studies}, indent=1)
                    patients.write((",\n" if self.tally.patients > 1 else "") + "  " + text.replace("\n", "\n  "))
        finally:
            table.close()
            self.db.close()
        return path

    def write_summary(self, threshold: OutlierThreshold, checked: bool, patients_path: str) -> dict:
        """``manifest.csv``, ``skipped.csv`` and ``report.json``; returns the report but its patients."""
        options = self.options
        skipped_by_reason = Counter(e.reason for e in self.manifest.where(SKIPPED))
        write_manifest(self.manifest, self.staging.path("manifest.csv"), include_paths=not options.pseudonymized)
        write_manifest(self.manifest.where(SKIPPED), self.staging.path("skipped.csv"),
                       include_paths=not options.pseudonymized)
        model_name = options.model_name or (os.path.basename(options.model_path) if options.model_path else "")
        stratum_names = options.stratum_names
        if stratum_names is None and options.model_path is not None:
            stratum_names = read_stratum_names(options.model_path)
        report = self.tally.content(
            threshold, latent_size=int(self.latent_size), files=len(self.manifest), skipped_by_reason=skipped_by_reason,
            model_name=display_text(model_name), stratum_names=stratum_names,
            options={"pseudonymized": options.pseudonymized, "thumbnails": options.thumbnails,
                     "duplicates_checked": checked},
        )
        report["files"] = list(REPORT_FILES)
        _report_json(self.staging.path("report.json"), report, patients_path, self.tally.patients > 0)
        return report

    def write_page(self, report: dict, page: _PageData) -> None:
        """``figures/`` and ``report.html``."""
        decoded = decode_prototypes(self.network, self.options.device, mean_norm_per_stratum(page.norms, page.strata, self.k))
        # the files are seen on their own, outside the page: upscaled to a readable size
        prototype_pngs = [image_png(img, scale=max(1, THUMBNAIL_WIDTH // decoded.shape[-1])) for img in decoded]
        processed = len(page.strata)
        latent_png = latent_map_png(
            page.drawn, page.strata[page.sample], self.prototypes, page.outliers[page.sample]) if processed else None
        show = self.options.thumbnails and processed
        galleries = _galleries(self.tally, self.dataset, self.options.num_workers) if show else None
        overlays = cluster_overlays(
            StrataAssignment.concatenate(page.overlay_parts, self.latent_size, self.k), self.dataset
        ) if page.overlay_parts else {}
        html = render_report_html(
            report, [data_uri(p) for p in prototype_pngs], galleries, data_uri(latent_png) if latent_png else None,
            [(f"image {index}", data_uri(png)) for index, png in overlays.items()], self.tables,
        )
        figures = {f"prototype_{j}.png": png for j, png in enumerate(prototype_pngs)}
        figures.update({f"cluster_overlay_{index}.png": png for index, png in overlays.items()})
        if latent_png:
            figures["latent_map.png"] = latent_png
        for name, png in figures.items():
            atomic_write(self.staging.path("figures", name), lambda f, b=png: f.write(b), "wb")
        atomic_write(self.staging.path("report.html"), lambda f: f.write(html))


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
    builder = _Builder(staging, manifest, dataset, network, options or ReportOptions())
    parts = [assignment] if isinstance(assignment, StrataAssignment) else assignment
    threshold, checked, processed = builder.mark_images(parts, skipped)
    page = builder.write_images(_Parts(parts, lambda part: part.select(_finite(part))), threshold, checked, processed)
    patients_path = builder.write_patients()
    report = builder.write_summary(threshold, checked, patients_path)
    builder.write_page(report, page)
    return report


def _model_inputs(dataset: CohortDataset, indices: Iterable[int], num_workers: int | None) -> dict[int, torch.Tensor]:
    # loaded again, so that no image had to be kept while streaming, through the decoding processes; an image that no
    # longer loads is left out
    subset = Subset(dataset, sorted(set(indices)))
    loader = CohortDataLoader(subset, batch_size=_THUMBNAIL_BATCH, num_workers=num_workers)
    return {int(i): image for batch in loader for i, image in zip(batch["index"], batch["image"])}


def _galleries(tally: ReportTally, dataset: CohortDataset, num_workers: int | None) -> dict[str, object]:
    exemplars, least = tally.stratum_examples()
    outliers = tally.outliers.sorted()
    chosen_rows = [row for chosen in (*exemplars, *least, outliers) for _, row in chosen]
    images = _model_inputs(dataset, (int(row["dataset_index"]) for row in chosen_rows), num_workers)

    def thumbnails(chosen: Sequence[tuple[int, Mapping]]) -> list[tuple[str, str]]:
        # the model input at its own size, which the page upscales without smoothing
        return [
            (f"similarity {row['similarity']:.3f}, patient {row['patient_id'] or '?'}", data_uri(image_png(image)))
            for _, row in chosen if (image := images.get(int(row["dataset_index"]))) is not None
        ]

    return {
        "exemplars": [thumbnails(s) for s in exemplars],
        "least_typical": [thumbnails(s) for s in least],
        "outliers": thumbnails(outliers),
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
