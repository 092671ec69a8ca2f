"""From an archive folder and a trained model to a report folder, streaming the images: the one report pipeline of
the CLI, the bundle's inference configs (single process and sharded) and the MONAI Label app."""

from __future__ import annotations

import os
import shutil
from collections.abc import Sequence

import ignite.distributed as idist

from monai_cae.data.cohort import CohortDataLoader, CohortDataset
from monai_cae.data.manifest import ManifestEntry, ManifestStore, scan_archive
from monai_cae.engines.distributed_inference import assign_strata_sharded
from monai_cae.engines.strata_evaluator import StrataEvaluator
from monai_cae.inference import StrataStore
from monai_cae.networks.nets import ContrastiveAutoEncoder

from .options import ReportOptions
from .staging import ReportStaging, check_output_dir, raise_without_images
from .writer import build_report

__all__ = ["generate_report"]


def generate_report(
    network: ContrastiveAutoEncoder,
    input_dir: str,
    output_dir: str,
    options: ReportOptions | None = None,
    shard_dir: str | None = None,
    **changes: object,
) -> dict | None:
    """Scan an archive, stream its radiographs through the model and write the report folder.

    The steps: :func:`~monai_cae.reports.check_output_dir`, a :class:`~monai_cae.reports.ReportStaging` folder,
    :func:`~monai_cae.data.scan_archive` into a :class:`~monai_cae.data.ManifestStore` there,
    :class:`~monai_cae.data.CohortDataset` / :class:`~monai_cae.data.CohortDataLoader` at the network's input size,
    a :class:`~monai_cae.engines.StrataEvaluator` writing a :class:`~monai_cae.inference.StrataStore` as batches
    arrive (with a digest of each model input, which finds pixel-identical copies of one film),
    :func:`~monai_cae.reports.build_report` and publishing. Only one batch of pixels is in memory at a time, and the
    tables grow on disk, not in memory.

    With ``shard_dir`` (a ``torchrun`` job, or ranks run one at a time as in
    :func:`~monai_cae.engines.assign_strata_sharded`), rank 0 scans, every rank assigns its block of the archive to a
    store in ``shard_dir``, and rank 0 builds the report from the stores read one after the other (no rank holds
    every row) and deletes ``shard_dir``.

    Args:
        network: trained network with prototypes, on ``options.device``.
        input_dir: archive folder.
        output_dir: report folder.
        options: how the archive is read and the report written (:class:`~monai_cae.reports.ReportOptions`).
        shard_dir: folder shared by the ranks of a sharded run; ``None`` runs in this process alone.
        changes: options to change in ``options`` (e.g. ``num_workers=0``).

    Returns:
        The content of ``report.json`` but its per-patient list (``None`` on ranks other than 0).

    Raises:
        FileExistsError: when ``output_dir`` holds a report and ``overwrite`` is false.
        FileNotFoundError: when ``input_dir`` is not a folder.
        NoImagesError: when no image could be processed (after writing the folder that lists why).
        TypeError: for a change that is not a report option.
    """
    options = ReportOptions.of(options, **changes)
    check_output_dir(output_dir, options.overwrite)
    if shard_dir is None:
        return _single_process(network, input_dir, output_dir, options)
    return _sharded(network, input_dir, output_dir, options, shard_dir)


def _scan(input_dir: str, output_dir: str, options: ReportOptions, store: str) -> ManifestStore:
    # a report folder kept inside the archive is the report's, not a patient's
    return scan_archive(
        input_dir, options.modalities, options.views, options.body_parts, options.pseudonymize_key,
        options.progress, exclude=[output_dir], max_pixels=options.max_pixels, store=store,
        num_workers=options.num_workers,
    )


def _dataset(manifest: Sequence[ManifestEntry], network: ContrastiveAutoEncoder, options: ReportOptions) -> CohortDataset:
    return CohortDataset(manifest, network.encoder.img_size, cache_dir=options.cache_dir, max_pixels=options.max_pixels)


def _single_process(network: ContrastiveAutoEncoder, input_dir: str, output_dir: str, options: ReportOptions) -> dict:
    with ReportStaging(output_dir, options.overwrite) as staging:
        manifest = _scan(input_dir, output_dir, options, staging.work("manifest.sqlite"))
        dataset = _dataset(manifest, network, options)
        loader = CohortDataLoader(dataset, batch_size=options.batch_size, num_workers=options.num_workers)
        store = StrataStore(staging.work("strata"), network.latent_size, network.num_prototypes)
        StrataEvaluator(options.device, loader, network, progress=options.progress, store=store, digests=True).run()
        report = build_report(staging, manifest, store, dataset, network, loader.skipped, options)
        manifest.close()
        staging.publish()
    return raise_without_images(report, output_dir)


def _sharded(
    network: ContrastiveAutoEncoder, input_dir: str, output_dir: str, options: ReportOptions, shard_dir: str
) -> dict | None:
    rank = idist.get_rank()
    manifest_path = os.path.join(shard_dir, "manifest.sqlite")
    if rank == 0:
        # private: the manifest and the shards hold the archive's identifiers until the report is published
        os.makedirs(shard_dir, mode=0o700, exist_ok=True)
        if os.path.exists(manifest_path):
            os.remove(manifest_path)  # the archive is scanned again: it may have changed since a killed run
        _scan(input_dir, output_dir, options, manifest_path).close()
    idist.barrier()
    manifest = ManifestStore(manifest_path)
    dataset = _dataset(manifest, network, options)
    result = assign_strata_sharded(
        network, dataset, shard_dir, batch_size=options.batch_size, num_workers=options.num_workers,
        device=options.device, progress=options.progress, fingerprint=os.path.abspath(input_dir), digests=True,
    )
    if result is None:
        manifest.close()
        return None
    with ReportStaging(output_dir, options.overwrite) as staging:
        report = build_report(staging, manifest, result.assignment, dataset, network, result.skipped, options)
        manifest.close()
        staging.publish()
    shutil.rmtree(shard_dir, ignore_errors=True)
    return raise_without_images(report, output_dir)
