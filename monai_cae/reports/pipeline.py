"""From an archive folder and a trained model to a report folder, streaming the images."""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence

import numpy as np
import torch

from monai_cae.data.cohort import CohortDataLoader, CohortDataset
from monai_cae.data.dicom import RADIOGRAPH_MODALITIES
from monai_cae.data.manifest import CHEST_BODY_PARTS, scan_archive
from monai_cae.data.unusable import DEFAULT_MAX_PIXELS
from monai_cae.engines.strata_evaluator import assign_strata
from monai_cae.networks.nets import ContrastiveAutoEncoder

from .duplicates import DigestingLoader
from .tables import OutlierThreshold
from .strata_names import read_stratum_names
from .writer import check_output_dir, write_report

__all__ = ["generate_report"]


def generate_report(
    network: ContrastiveAutoEncoder,
    input_dir: str,
    output_dir: str,
    img_size: Sequence[int] | int = 28,
    modalities: Sequence[str] | None = RADIOGRAPH_MODALITIES,
    views: Sequence[str] | None = None,
    body_parts: Sequence[str] | None = CHEST_BODY_PARTS,
    pseudonymize_key: str | None = None,
    overwrite: bool = False,
    thumbnails: bool = True,
    outlier_threshold: float | OutlierThreshold | None = None,
    outlier_percentile: float = 1.0,
    reference_embeddings: str | np.ndarray | None = None,
    cache_dir: str | None = None,
    batch_size: int = 64,
    num_workers: int | None = None,
    device: torch.device | str = "cpu",
    model_name: str = "",
    progress: bool = True,
    model_path: str | None = None,
    stratum_names: Mapping[int, str] | None = None,
    max_pixels: int = DEFAULT_MAX_PIXELS,
) -> dict:
    """Scan an archive, stream its radiographs through the model and write the report folder.

    The same steps as the bundle's ``inference`` workflow with ``--input_dir`` (``bundles/cae/configs/
    inference.json``): :func:`~monai_cae.reports.check_output_dir`, :func:`~monai_cae.data.scan_archive`,
    :class:`~monai_cae.data.CohortDataset` / :class:`~monai_cae.data.CohortDataLoader`, :func:`~monai_cae.engines.assign_strata`,
    :func:`~monai_cae.reports.write_report`. Only one batch of pixels is in memory at a time; a digest of each model
    input (:class:`~monai_cae.reports.DigestingLoader`) finds pixel-identical copies of one film.

    Args:
        network: trained network with prototypes, on ``device``.
        input_dir: archive folder.
        output_dir: report folder.
        img_size: the model's input size.
        modalities, views, body_parts: DICOM selection (see :func:`~monai_cae.data.scan_archive`); chest
            radiographs (CR, DX, DR; BodyPartExamined CHEST or empty) by default, ``None`` switches a filter off.
        pseudonymize_key: HMAC key replacing identifiers with pseudonyms; ``None`` keeps them.
        overwrite: replace an existing report.
        thumbnails: put example images in the page.
        outlier_threshold, outlier_percentile, reference_embeddings: outlier flag (see
            :func:`~monai_cae.reports.outlier_threshold`); ``reference_embeddings`` (the training run's latents, an
            array or ``.npy`` path), or ``OutlierThreshold(value, "reference", percentile)`` for a training percentile
            kept with the model, makes the threshold come from training, which the report states.
        cache_dir: optional cache of preprocessed images.
        batch_size: images per batch.
        num_workers: loader processes; one per CPU when ``None`` (see :func:`~monai_cae.data.default_num_workers`).
        device: device of the network.
        model_name: name of the model in the report (the file name of ``model_path`` when empty).
        progress: show progress bars.
        model_path: the model file; the names given to its strata (:func:`~monai_cae.reports.read_stratum_names`)
            are shown unless ``stratum_names`` is given.
        stratum_names: names of strata to show, ``{index: name}``.
        max_pixels: the largest image accepted; larger ones are skipped as ``"too_large"`` before decoding.

    Returns:
        The content of ``report.json``.

    Raises:
        FileExistsError: when ``output_dir`` holds a report and ``overwrite`` is false.
        FileNotFoundError: when ``input_dir`` is not a folder.
        NoImagesError: when no image could be processed (after writing the folder that lists why).
    """
    check_output_dir(output_dir, overwrite)
    if stratum_names is None and model_path is not None:
        stratum_names = read_stratum_names(model_path)
    # a report folder kept inside the archive is the report's, not a patient's
    manifest = scan_archive(
        input_dir, modalities, views, body_parts, pseudonymize_key, progress, exclude=[output_dir], max_pixels=max_pixels
    )
    dataset = CohortDataset(manifest, img_size, cache_dir=cache_dir, max_pixels=max_pixels)
    loader = CohortDataLoader(dataset, batch_size=batch_size, num_workers=num_workers)
    digesting = DigestingLoader(loader)
    assignment = assign_strata(network, digesting, device, progress)
    return write_report(
        assignment, dataset, network, output_dir, skipped=loader.skipped, overwrite=overwrite,
        thumbnails=thumbnails, outlier_threshold_value=outlier_threshold, outlier_percentile=outlier_percentile,
        reference_embeddings=reference_embeddings, device=device,
        model_name=model_name or (os.path.basename(model_path) if model_path else ""),
        pseudonymized=pseudonymize_key is not None, image_digests=digesting.digests, stratum_names=stratum_names,
    )
