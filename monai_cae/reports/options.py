"""The options of a cohort report, one dataclass for the CLI, the bundle's inference configs and the MONAI Label app."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import torch

from monai_cae.data.dicom import RADIOGRAPH_MODALITIES
from monai_cae.data.manifest import CHEST_BODY_PARTS
from monai_cae.data.unusable import DEFAULT_MAX_PIXELS

from .tables import OutlierThreshold

__all__ = ["ReportOptions"]


@dataclass
class ReportOptions:
    """How an archive is read and its report written (:func:`~monai_cae.reports.generate_report`).

    Attributes:
        modalities, views, body_parts: DICOM selection (see :func:`~monai_cae.data.scan_archive`); chest
            radiographs (CR, DX, DR; BodyPartExamined CHEST or empty) by default, ``None`` switches a filter off.
        pseudonymize_key: HMAC key replacing identifiers with pseudonyms; ``None`` keeps them. With a key the file
            paths are left out of ``manifest.csv`` and ``skipped.csv``, and the report says it is pseudonymized.
        max_pixels: the largest image accepted; larger ones are skipped as ``"too_large"`` before decoding.
        cache_dir: optional cache of preprocessed images.
        batch_size: images per batch.
        num_workers: processes reading the headers and decoding the images; one per CPU when ``None`` (see
            :func:`~monai_cae.data.default_num_workers`), 0 to do both in this process.
        device: device of the network.
        progress: show progress bars.
        overwrite: replace an existing report.
        thumbnails: put images in the page: each stratum's exemplars and least typical members, and the outliers
            (off when burnt-in text could identify).
        thumbnails_per_stratum: exemplars, and least typical members, per stratum.
        max_outliers: outliers in the page's gallery.
        max_overlays: pixel cluster overlays in the page, for a model with a local branch.
        outlier_threshold: fixed cosine-similarity threshold for outliers, or an
            :class:`~monai_cae.reports.OutlierThreshold` that says where it came from (see
            :func:`~monai_cae.reports.outlier_threshold`).
        outlier_percentile: percentile of the reference (else cohort) similarities used as threshold.
        reference_embeddings: ``(N, D)`` reference latents or a ``.npy`` path, e.g. the training run's
            ``prototypes/embeddings.npy``: the threshold then comes from training, which the report states.
        model_name: what to call the model in the report (the file name of ``model_path`` when empty).
        model_path: the model file; the names given to its strata (:func:`~monai_cae.reports.read_stratum_names`)
            are shown unless ``stratum_names`` is given.
        stratum_names: names of strata to show, ``{index: name}``.
    """

    modalities: Sequence[str] | None = RADIOGRAPH_MODALITIES
    views: Sequence[str] | None = None
    body_parts: Sequence[str] | None = CHEST_BODY_PARTS
    pseudonymize_key: str | None = None
    max_pixels: int = DEFAULT_MAX_PIXELS
    cache_dir: str | None = None
    batch_size: int = 64
    num_workers: int | None = None
    device: torch.device | str = "cpu"
    progress: bool = True
    overwrite: bool = False
    thumbnails: bool = True
    thumbnails_per_stratum: int = 6
    max_outliers: int = 24
    max_overlays: int = 24
    outlier_threshold: float | OutlierThreshold | None = None
    outlier_percentile: float = 1.0
    reference_embeddings: str | np.ndarray | None = None
    model_name: str = ""
    model_path: str | None = None
    stratum_names: Mapping[int, str] | None = None

    @classmethod
    def of(cls, options: ReportOptions | None = None, **changes: object) -> ReportOptions:
        """``options`` (the defaults when ``None``) with some fields changed.

        Raises:
            TypeError: for a change that is not a field, named in the message.
        """
        fields = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(changes) - fields)
        if unknown:
            raise TypeError(f"unknown report option(s) {unknown}; the options are {sorted(fields)}.")
        return dataclasses.replace(options or cls(), **changes)  # type: ignore[arg-type]

    @property
    def pseudonymized(self) -> bool:
        """Whether the identifiers are pseudonyms."""
        return self.pseudonymize_key is not None
