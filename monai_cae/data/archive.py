"""Training on a hospital's own archive: the report's readers, a split by patient, and a cache of model inputs."""

from __future__ import annotations

import csv
import hashlib
import os
from collections.abc import Sequence

import numpy as np
import torch
from tqdm.auto import tqdm

from .cohort import CohortDataLoader, CohortDataset
from .dicom import RADIOGRAPH_MODALITIES
from .manifest import SELECTED, ManifestEntry, csv_cell, scan_archive
from .unusable import DEFAULT_MAX_PIXELS

__all__ = ["ARCHIVE_SPLITS", "ArchiveDataset", "patient_key", "split_patients"]

ARCHIVE_SPLITS = ("train", "val", "all")


def patient_key(entry: ManifestEntry) -> str:
    """The identity an image is split by: its PatientID, or, without one, its study, or the file itself.

    Images without PatientID are never merged into one anonymous patient: each study (or file) stands alone.

    Args:
        entry: a manifest entry.

    Returns:
        A non-empty key.
    """
    if entry.PatientID:
        return f"patient:{entry.PatientID}"
    return f"study:{entry.StudyInstanceUID}" if entry.StudyInstanceUID else f"file:{entry.image_id}"


def split_patients(patients: Sequence[str], val_fraction: float, seed: int = 0) -> set[str]:
    """Choose the validation patients: the ``round(val_fraction * n)`` patients first in a seeded hash order.

    The order depends only on each patient's key and the seed, not on the archive's file order, so the split is
    reproducible and a patient added later does not move the others between splits more than the count requires.

    Args:
        patients: distinct patient keys.
        val_fraction: share of patients for validation, in ``[0, 1)``.
        seed: seed of the hash order.

    Returns:
        The validation patients; at least one when there are two or more patients and ``val_fraction > 0``.

    Raises:
        ValueError: for ``val_fraction`` outside ``[0, 1)``.
    """
    if not 0.0 <= val_fraction < 1.0:
        raise ValueError(f"val_fraction must be in [0, 1), got {val_fraction}.")
    unique = sorted(set(patients))
    count = round(val_fraction * len(unique))
    if val_fraction > 0 and len(unique) > 1:
        count = min(max(count, 1), len(unique) - 1)
    order = sorted(unique, key=lambda p: hashlib.sha256(f"{seed}:{p}".encode()).hexdigest())
    return set(order[:count])


def _write_csv(path: str, header: Sequence[str], rows: Sequence[Sequence[str]]) -> None:
    # through a sibling and a rename: a killed run leaves the previous record whole
    tmp = f"{path}.tmp-{os.getpid()}"
    with open(tmp, "w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow(header)
        writer.writerows([csv_cell(value) for value in row] for row in rows)
    os.replace(tmp, path)


class ArchiveDataset(torch.utils.data.Dataset):
    """One split of an archive's usable radiographs, by patient, for training: ``make_dataset("archive", ...)``.

    The archive is read exactly as the report reads it: :func:`~monai_cae.data.scan_archive` with the same
    modality / view / body-part filters, then :class:`~monai_cae.data.CohortDataset` (``decode_dicom``, the same
    preprocessing). Patients (:func:`patient_key`) are split by :func:`split_patients`; no patient is in both splits.

    At construction every image of the split is decoded once, in loader processes: an unusable file is left out
    with the report's reason code (:attr:`skipped`, written to ``skipped_<split>.csv`` with ``record_dir``), and
    with ``cache_dir`` the preprocessed image is stored (``monai.data.PersistentDataset``, keyed by path, size and
    modification time), so that the training epochs read the cache and decode nothing; a changed file is decoded
    again. The report's ``--cache_dir`` uses the same cache. Labels are never read: items carry ``label`` ``-1``.

    Items are ``{"image", "label", "index", "id"}``, ``index`` the position in this split.

    Args:
        root: archive folder.
        split: ``"train"``, ``"val"`` or ``"all"``.
        img_size: model input size.
        val_fraction: share of patients held out for validation.
        seed: seed of the patient split.
        cache_dir: cache of preprocessed images; ``None`` decodes every epoch.
        modalities, views, body_parts: DICOM selection, as in :func:`~monai_cae.data.scan_archive`.
        record_dir: folder where ``split.csv`` (image id, patient key, split of every usable image) and
            ``skipped_<split>.csv`` are written; ``None`` writes nothing.
        num_workers: processes of the header scan and of the first decoding pass
            (:func:`~monai_cae.data.default_num_workers` when ``None``).
        progress: show progress bars.
        max_pixels: the largest image accepted (larger ones are skipped as ``"too_large"`` before decoding).

    Raises:
        ValueError: for an unknown ``split``, or when the split holds no usable image.
        FileNotFoundError: when ``root`` is not a folder.
    """

    def __init__(
        self,
        root: str,
        split: str = "train",
        img_size: Sequence[int] | int = 28,
        val_fraction: float = 0.1,
        seed: int = 0,
        cache_dir: str | None = None,
        modalities: Sequence[str] | None = RADIOGRAPH_MODALITIES,
        views: Sequence[str] | None = None,
        body_parts: Sequence[str] | None = ("CHEST",),
        record_dir: str | None = None,
        num_workers: int | None = None,
        progress: bool = True,
        max_pixels: int = DEFAULT_MAX_PIXELS,
    ) -> None:
        if split not in ARCHIVE_SPLITS:
            raise ValueError(f"split must be one of {ARCHIVE_SPLITS}, got {split!r}.")
        manifest = scan_archive(
            root, modalities, views, body_parts, progress=progress, max_pixels=max_pixels, num_workers=num_workers
        )
        selected = [e for e in manifest if e.status == SELECTED]
        held_out = split_patients([patient_key(e) for e in selected], val_fraction, seed)
        split_of = {id(e): ("val" if patient_key(e) in held_out else "train") for e in selected}
        chosen = [e for e in selected if split == "all" or split_of[id(e)] == split]
        self.skipped: list[tuple[str, str, str]] = [(e.image_id, e.reason, e.detail) for e in manifest
                                                    if e.status != SELECTED]
        self.entries = self._decode_once(chosen, img_size, cache_dir, num_workers, progress, max_pixels)
        if not self.entries:
            raise ValueError(
                f"the {split} split of {os.path.abspath(root)} holds no usable image ({len(manifest)} files scanned, "
                f"{len(selected)} selected); see the skipped files' reasons."
            )
        self.data = CohortDataset(self.entries, img_size, cache_dir=cache_dir, max_pixels=max_pixels)
        self.patients = sorted({patient_key(e) for e in self.entries})
        if record_dir is not None:
            rows = [(e.image_id, patient_key(e), split_of[id(e)]) for e in selected]
            os.makedirs(record_dir, exist_ok=True)
            # the same for every split's dataset: every selected image of the archive and its split
            _write_csv(os.path.join(record_dir, "split.csv"), ("image_id", "patient", "split"), rows)
            _write_csv(os.path.join(record_dir, f"skipped_{split}.csv"), ("image_id", "reason", "detail"), self.skipped)

    def _decode_once(
        self, entries: list[ManifestEntry], img_size: Sequence[int] | int, cache_dir: str | None,
        num_workers: int | None, progress: bool, max_pixels: int,
    ) -> list[ManifestEntry]:
        dataset = CohortDataset(entries, img_size, cache_dir=cache_dir, max_pixels=max_pixels)
        loader = CohortDataLoader(dataset, batch_size=32, num_workers=num_workers)
        for _ in tqdm(loader, desc="Decoding the archive", disable=not progress, leave=False):
            pass
        failed = {index: (reason, detail) for index, reason, detail in loader.skipped}
        self.skipped += [(entries[i].image_id, *failed[i]) for i in sorted(failed)]
        return [e for i, e in enumerate(entries) if i not in failed]

    def __len__(self) -> int:
        return len(self.entries)

    def __getitem__(self, index: int) -> dict:
        item = self.data[index]
        if not item["ok"]:
            # the first pass loaded it: only a file changed or removed since then gets here
            raise RuntimeError(f"{self.entries[index].image_id} can no longer be loaded: {item['reason']}: {item['detail']}")
        return {"image": item["image"], "label": np.int64(-1), "index": index, "id": item["id"]}
