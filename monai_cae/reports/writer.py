"""Writing a cohort report folder: tables, report.json, report.html, all published at once."""

from __future__ import annotations

import csv
import dataclasses
import json
import os
import re
import shutil
import socket
import uuid
from collections import Counter
from collections.abc import Mapping, Sequence

import numpy as np
import torch

from monai_cae.data.cohort import CohortDataset
from monai_cae.data.unusable import UnusableImageError
from monai_cae.data.manifest import PROCESSED, REPORT_MARKER, SKIPPED, csv_cell, display_text, write_manifest
from monai_cae.engines.strata import StrataAssignment, write_assignments
from monai_cae.networks.nets import ContrastiveAutoEncoder
from monai_cae.utils.io import atomic_write, publish_folder

from .figures import data_uri, decode_prototypes, image_png, latent_map_png, stratum_latent_norms
from .html import THUMBNAIL_WIDTH, render_report_html
from .overlays import cluster_overlays
from .explain import report_content
from .tables import PATIENT_COLUMNS, OutlierThreshold, image_columns, image_rows, outlier_threshold, reference_similarities

__all__ = ["REPORT_FILES", "NoImagesError", "check_output_dir", "publish_folder", "write_report"]

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


def _write_rows(path: str, columns: Sequence[str], rows: Sequence[dict]) -> None:
    def write(f) -> None:
        writer = csv.DictWriter(f, fieldnames=list(columns), extrasaction="ignore")
        writer.writeheader()
        for row in rows:
            # numbers are formatted here, never quoted; only text goes through csv_cell
            writer.writerow({k: f"{v:.6f}" if isinstance(v, float) else int(v) if isinstance(v, bool) else csv_cell(v)
                             for k, v in row.items()})

    atomic_write(path, write)


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


def _thumbnail(dataset: CohortDataset, assignment: StrataAssignment, rows: Sequence[dict], position: int) -> tuple:
    # loaded again on its own, so that no image had to be kept while streaming; the model input at its own size,
    # which the page upscales without smoothing
    item = dataset[int(assignment.indices[position])]
    row = rows[position]
    caption = f"similarity {row['similarity']:.3f}, patient {row['patient_id'] or '?'}"
    return (caption, data_uri(image_png(item["image"]))) if item["ok"] else None


def _galleries(
    report: dict, dataset: CohortDataset, assignment: StrataAssignment, rows: Sequence[dict]
) -> dict[str, object]:
    position = {r["image_id"]: i for i, r in enumerate(rows)}

    def load(ids: Sequence[str]) -> list[tuple[str, str]]:
        return [t for t in (_thumbnail(dataset, assignment, rows, position[i]) for i in ids) if t is not None]

    return {
        "exemplars": [load(s["exemplars"]) for s in report["strata"]],
        "least_typical": [load(s["least_typical"]) for s in report["strata"]],
        "outliers": load(report["outlier"]["gallery"]),
    }


def _without_non_finite(assignment: StrataAssignment) -> tuple[StrataAssignment, list[tuple[int, str, str]]]:
    # a latent that is not finite, from an input no check foresaw, would stop the PCA and the figures of the whole
    # cohort: the image is named in skipped.csv and the report goes on without it
    finite = np.all([np.isfinite(a).all(1) for a in (assignment.embeddings, assignment.similarities,
                                                    assignment.probabilities)], axis=0)
    if finite.all():
        return assignment, []
    dropped = [(int(i), "non_finite", "the model's latent of this image is not finite") for i in assignment.indices[~finite]]
    kept = np.flatnonzero(finite)
    rows = {f.name: getattr(assignment, f.name) for f in dataclasses.fields(assignment)}
    rows = {name: None if value is None else [value[i] for i in kept] if isinstance(value, list) else value[kept]
            for name, value in rows.items()}
    return StrataAssignment(**rows), dropped


def write_report(
    assignment: StrataAssignment,
    dataset: CohortDataset,
    network: ContrastiveAutoEncoder,
    output_dir: str,
    skipped: Sequence[tuple[int, str, str]] = (),
    overwrite: bool = False,
    thumbnails: bool = True,
    thumbnails_per_stratum: int = 6,
    outlier_threshold_value: float | OutlierThreshold | None = None,
    outlier_percentile: float = 1.0,
    reference_embeddings: str | np.ndarray | None = None,
    device: torch.device | str = "cpu",
    model_name: str = "",
    pseudonymized: bool = False,
    max_overlays: int = 24,
    image_digests: Mapping[int, str] | None = None,
    stratum_names: Mapping[int, str] | None = None,
    max_outliers: int = 24,
) -> dict:
    """Write the report folder of a cohort.

    Files: ``manifest.csv`` (every file, final status), ``skipped.csv`` (every skipped file with reason code and
    detail), ``embeddings.npy`` and ``assignments.csv`` (as :func:`monai_cae.engines.write_assignments`),
    ``strata_per_image.csv``, ``strata_per_patient.csv``, ``report.json`` (:func:`~monai_cae.reports.report_content`:
    every stratum explained), ``report.html`` (self-contained, bounded in size whatever the archive's) and
    ``figures/`` (decoded prototypes, latent map). A model with a local branch adds ``cluster_maps.npy`` and, with
    thumbnails, ``figures/cluster_overlay_<index>.png`` shown in the page (the first ``max_overlays`` images).
    Everything is written to a hidden staging folder beside
    ``output_dir`` (private to the user until it is published; staging folders that killed runs of this host left
    are removed first), then published at once by :func:`publish_folder`. Every report folder holds
    :data:`~monai_cae.data.manifest.REPORT_MARKER`, so that archive scans never read it. Text cells of the CSV files
    are written by :func:`~monai_cae.data.manifest.csv_cell` (never run as spreadsheet formulas). No header field
    other than :data:`monai_cae.data.HEADER_FIELDS` is ever read into the outputs.

    Args:
        assignment: the model's assignment of the images that loaded.
        dataset: the cohort (its ``manifest`` lists every file, its ``entries`` the selected ones).
        network: the trained network.
        output_dir: report folder.
        skipped: ``(index, reason, detail)`` of the selected images that failed to load
            (:attr:`monai_cae.data.CohortDataLoader.skipped`). Images of ``assignment`` whose latent is not finite
            join them as ``"non_finite"``.
        overwrite: replace an existing report.
        thumbnails: put images in the page: each stratum's exemplars and least typical members, and the outliers
            (off when burnt-in text could identify).
        thumbnails_per_stratum: exemplars, and least typical members, per stratum.
        outlier_threshold_value: fixed cosine-similarity threshold for outliers, or an
            :class:`~monai_cae.reports.OutlierThreshold` that says where it came from (see
            :func:`~monai_cae.reports.outlier_threshold`).
        outlier_percentile: percentile of the reference (else cohort) similarities used as threshold.
        reference_embeddings: ``(N, D)`` reference latents or a ``.npy`` path, e.g. the training run's
            ``prototypes/embeddings.npy``.
        device: device of the network.
        model_name: what to call the model in the report (e.g. the checkpoint file name).
        pseudonymized: whether the identifiers are pseudonyms (stated in the report); the file paths are then left
            out of ``manifest.csv`` and ``skipped.csv``.
        max_overlays: pixel cluster overlays in the page, for a model with a local branch.
        image_digests: digest of each image's model input by entry index
            (:attr:`~monai_cae.reports.DigestingLoader.digests`): pixel-identical copies are flagged (``duplicate_of``)
            and counted once in the shares. ``None`` does not look for copies (the report says so).
        stratum_names: names given to strata (:func:`~monai_cae.reports.read_stratum_names`), shown in the page and
            in ``report.json``.
        max_outliers: outliers in the page's gallery.

    Returns:
        The content of ``report.json``.

    Raises:
        FileExistsError: when ``output_dir`` holds a report and ``overwrite`` is false.
        NoImagesError: after writing the folder, when no image could be processed.
    """
    assignment, unusable = _without_non_finite(assignment)
    entries, manifest = dataset.entries, dataset.manifest
    for index, reason, detail in [*skipped, *unusable]:
        entries[index].skip(UnusableImageError(reason, detail))
    for index in assignment.indices:
        entries[int(index)].status = PROCESSED
    prototypes = network.prototypes.detach().float().cpu().numpy()
    k = len(prototypes)
    threshold = outlier_threshold(
        assignment.nearest_similarity, outlier_threshold_value, outlier_percentile,
        reference_similarities(reference_embeddings, prototypes),
    )
    rows = image_rows(entries, assignment, threshold, image_digests)
    skipped_entries = [e for e in manifest if e.status == SKIPPED]
    report = report_content(
        rows, k, threshold, latent_size=int(prototypes.shape[1]), files=len(manifest),
        skipped_by_reason=Counter(e.reason for e in skipped_entries), model_name=display_text(model_name),
        stratum_names=stratum_names, examples=thumbnails_per_stratum, max_outliers=max_outliers,
        options={"pseudonymized": pseudonymized, "thumbnails": thumbnails,
                 "duplicates_checked": image_digests is not None},
    )
    report["files"] = list(REPORT_FILES)
    processed = len(rows)
    outliers = np.array([r["outlier"] for r in rows], dtype=bool)

    decoded = decode_prototypes(network, device, stratum_latent_norms(assignment.embeddings, assignment.clusters, k))
    # the files are seen on their own, outside the page: upscaled to a readable size
    prototype_pngs = [image_png(img, scale=max(1, THUMBNAIL_WIDTH // decoded.shape[-1])) for img in decoded]
    latent_png = latent_map_png(assignment.embeddings, assignment.clusters, prototypes, outliers) if processed else None
    galleries = _galleries(report, dataset, assignment, rows) if thumbnails and processed else None
    overlays = (
        cluster_overlays(assignment, dataset, max_overlays)
        if assignment.cluster_maps is not None and thumbnails else {}
    )
    html = render_report_html(
        report, [data_uri(p) for p in prototype_pngs], galleries, data_uri(latent_png) if latent_png else None,
        [(f"image {index}", data_uri(png)) for index, png in overlays.items()],
    )

    target = os.path.abspath(output_dir)
    os.makedirs(os.path.dirname(target), exist_ok=True)
    _remove_stale_staging(target)
    # private while it is written, so that no one reads patient data from a half-written report; published with
    # the usual umask rights
    staging = _staging_folder(target)
    os.mkdir(staging, 0o700)
    try:
        # first: a scan of an archive that holds this folder must never read it, even half-written
        atomic_write(os.path.join(staging, REPORT_MARKER), lambda f: f.write(
            "Written by monai-cae-report. Archive scans (monai_cae.data.scan_archive) do not read this folder.\n"))
        write_manifest(manifest, os.path.join(staging, "manifest.csv"), include_paths=not pseudonymized)
        write_manifest(skipped_entries, os.path.join(staging, "skipped.csv"), include_paths=not pseudonymized)
        # write_assignments writes the ids as they are: quoted here where they would read as a formula
        write_assignments(dataclasses.replace(assignment, ids=[csv_cell(i) for i in assignment.ids]), staging)
        _write_rows(os.path.join(staging, "strata_per_image.csv"), image_columns(k), rows)
        _write_rows(os.path.join(staging, "strata_per_patient.csv"), PATIENT_COLUMNS, report["patients"])
        for j, png in enumerate(prototype_pngs):
            atomic_write(os.path.join(staging, "figures", f"prototype_{j}.png"), lambda f, b=png: f.write(b), "wb")
        for index, png in overlays.items():
            atomic_write(os.path.join(staging, "figures", f"cluster_overlay_{index}.png"), lambda f, b=png: f.write(b), "wb")
        if latent_png:
            atomic_write(os.path.join(staging, "figures", "latent_map.png"), lambda f: f.write(latent_png), "wb")
        atomic_write(os.path.join(staging, "report.json"), lambda f: json.dump(report, f, indent=1))
        atomic_write(os.path.join(staging, "report.html"), lambda f: f.write(html))
        os.chmod(staging, _folder_mode())
        publish_folder(staging, target, overwrite)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    if not processed:
        raise NoImagesError(
            f"no image could be processed ({len(manifest)} files, reasons {report['counts']['skipped_by_reason']}); "
            f"every file and why is listed in {os.path.join(target, 'skipped.csv')}."
        )
    return report

