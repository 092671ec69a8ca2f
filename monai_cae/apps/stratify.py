"""``monai-cae-stratify``: from a hospital's own archive to a trained model and its per-patient strata report.

    monai-cae-stratify ARCHIVE OUT [--img-size 128]         train on ARCHIVE, discover the strata, write the report
    monai-cae-stratify ARCHIVE OUT --resume                 continue a killed run where it stopped
    monai-cae-stratify NEW_STUDIES OUT --model OUT/model/model.pt
                                                            apply a trained model to new studies, no training

Training runs the bundle's ``training`` workflow (``bundles/cae/configs/train.json`` with ``archive.json`` and the
size preset ``archive_<size>.json``): the archive is read by the report's own readers and filters, split by
patient, cached after one decoding pass, and learned without labels. Then the report is written with the trained
model, calibrated on the training images (outliers are images less similar to every prototype than 99 % of the
training images).

OUT holds ``model/`` (``model.pt``, ``model.json``, ``prototypes.npy``: the model and its card), ``train/`` (the
training run: checkpoints, prototypes, TensorBoard, ``split.csv``, ``skipped_*.csv``, and ``cache/``, the
preprocessed images) and ``report/`` (the report). ``train/`` holds patient-derived data (image ids, cached
images): keep it with the report, or delete it once the model is final (``--drop-cache`` removes the cache).

Exit status: 0 when a report was written, 1 when no image could be processed, 2 for unusable input (archive,
model, output folder, options).
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
from collections.abc import Sequence

import monai.bundle
import torch

from monai_cae.apps.bundle import bundle_dir
from monai_cae.data.dicom import RADIOGRAPH_MODALITIES
from monai_cae.engines.model_card import load_trained_model, model_card_path
from monai_cae.handlers import latest_checkpoint
from monai_cae.reports.cli import pseudonymize_key, selection
from monai_cae.reports.options import ReportOptions
from monai_cae.reports.pipeline import generate_report
from monai_cae.reports.tables import training_outlier_threshold
from monai_cae.reports.staging import NoImagesError, check_output_dir

__all__ = ["SIZE_PRESETS", "main", "parse_args", "train_on_archive"]

SIZE_PRESETS = (28, 64, 128, 256)
"""Input sizes with a preset: 128 is ``archive.json`` itself, 64 and 256 add ``archive_<size>.json``; 28 px
trains the published network with ``archive.json``'s schedule."""


def _config_files(bundle: str, img_size: int) -> list[str]:
    configs = os.path.join(bundle, "configs")
    files = [os.path.join(configs, "train.json"), os.path.join(configs, "archive.json")]
    size_preset = os.path.join(configs, f"archive_{img_size}.json")
    if os.path.isfile(size_preset):
        files.append(size_preset)
    missing = [f for f in files if not os.path.isfile(f)]
    if missing:
        raise FileNotFoundError(f"the bundle at {os.path.abspath(bundle)} lacks {', '.join(missing)}; pass --bundle.")
    return files


def train_on_archive(
    archive: str, run_dir: str, img_size: int = 128, bundle: str | None = None, resume: bool = False,
    progress: bool = True, **overrides,
) -> str:
    """Train the bundle on an archive without labels and return the trained ``model.pt``.

    Args:
        archive: archive folder.
        run_dir: the run's folder (``model/`` and ``train/`` are written in it).
        img_size: input size; 28, 64, 128 or 256 use their presets (any other size trains with ``archive.json``).
        bundle: the bundle folder; :func:`~monai_cae.apps.bundle.bundle_dir` when omitted.
        resume: continue from the newest checkpoint of an earlier, interrupted run in ``run_dir``.
        progress: progress bars.
        overrides: further bundle ids, e.g. ``max_epochs=10``, ``batch_size=16``.

    Returns:
        The path of the trained model.

    Raises:
        FileExistsError: when ``run_dir`` holds a training run and ``resume`` is false.
        FileNotFoundError: when ``resume`` finds no checkpoint, or the bundle lacks a config.
    """
    bundle = bundle or bundle_dir()
    config_files = _config_files(bundle, img_size)
    model_dir, output_dir = os.path.join(run_dir, "model"), os.path.join(run_dir, "train")
    checkpoints = os.path.join(output_dir, "checkpoints")
    has_checkpoints = os.path.isdir(checkpoints) and bool(os.listdir(checkpoints))
    if has_checkpoints and not resume:
        raise FileExistsError(
            f"{os.path.abspath(run_dir)} already holds a training run: pass --resume to continue it, or choose "
            "another output folder."
        )
    if resume:
        latest_checkpoint(checkpoints)  # names the folder when no complete checkpoint is there
    monai.bundle.run(
        "training", config_file=config_files, meta_file=os.path.join(bundle, "configs", "metadata.json"),
        logging_file=os.path.join(bundle, "configs", "logging.conf"), bundle_root=bundle, dataset_dir=archive,
        output_dir=output_dir, model_dir=model_dir, img_size=img_size, resume=resume, progress=progress, **overrides,
    )
    return os.path.join(model_dir, "model.pt")


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    """Parse the command line (see ``monai-cae-stratify --help``)."""
    parser = argparse.ArgumentParser(
        prog="monai-cae-stratify", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("archive", help="archive folder (DICOM with or without .dcm, NIfTI, PNG/JPEG), recursive")
    parser.add_argument("output_dir", help="run folder: model/, train/ and report/ are written in it")
    parser.add_argument("--img-size", type=int, default=128, help=f"input size (presets: {SIZE_PRESETS}; default 128)")
    parser.add_argument("--model", default=None, help="apply this trained model.pt instead of training (no training)")
    parser.add_argument("--resume", action="store_true", help="continue a killed run in OUTPUT_DIR")
    parser.add_argument("--epochs", type=int, default=None, help="total epochs (default: the size preset's)")
    parser.add_argument("--warmup-epochs", type=int, default=None, help="contrastive epochs (default: half)")
    parser.add_argument("--batch-size", type=int, default=None, help="training batch (default: the size preset's)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--overwrite", action="store_true", help="replace an existing report/ (not the training)")
    key = parser.add_mutually_exclusive_group()
    key.add_argument("--pseudonymize", metavar="KEY", help="replace PatientID and UIDs in the report by HMAC-SHA256")
    key.add_argument("--pseudonymize-key-file", metavar="FILE", help="the same, reading KEY from a file")
    parser.add_argument("--modalities", nargs="+", default=list(RADIOGRAPH_MODALITIES),
                        help="accepted DICOM modalities, or 'any' (default CR DX DR)")
    parser.add_argument("--views", nargs="+", default=None, help="accepted ViewPosition values, e.g. PA AP")
    parser.add_argument("--body-parts", nargs="+", default=["CHEST"],
                        help="accepted BodyPartExamined (default CHEST; an empty tag passes), or 'any'")
    parser.add_argument("--outlier-percentile", type=float, default=1.0,
                        help="outliers: below this percentile of the training images' similarity (default 1)")
    parser.add_argument("--num-workers", type=int, default=None, help="decoding processes (default: one per CPU)")
    parser.add_argument("--drop-cache", action="store_true", help="delete train/cache once the report is written")
    parser.add_argument("--no-thumbnails", action="store_true", help="no patient images in report.html")
    parser.add_argument("--bundle", default=None, help="the cae bundle folder (default: the one installed with this package, bundles/cae of a checkout)")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--quiet", action="store_true", help="no progress bars")
    args = parser.parse_args(argv)
    for name in ("epochs", "warmup_epochs", "batch_size"):
        value = getattr(args, name)
        if value is not None and value < (0 if name == "warmup_epochs" else 1):
            parser.error(f"--{name.replace('_', '-')} must be positive, got {value}.")
    if args.model and (args.resume or args.epochs or args.warmup_epochs or args.batch_size):
        parser.error("--model applies a trained model: --resume, --epochs, --warmup-epochs and --batch-size train one.")
    return args


def _training_overrides(args: argparse.Namespace) -> dict:
    overrides: dict = {"seed": args.seed, "modalities": selection(args.modalities), "views": selection(args.views),
                       "body_parts": selection(args.body_parts), "device": torch.device(args.device)}
    if args.epochs is not None:
        overrides["max_epochs"] = args.epochs
        overrides["warmup_epochs"] = args.warmup_epochs if args.warmup_epochs is not None else args.epochs // 2
        overrides["lr_warmup_epochs"] = max(1, min(5, overrides["warmup_epochs"] // 2))
    elif args.warmup_epochs is not None:
        overrides["warmup_epochs"] = args.warmup_epochs
    if args.batch_size is not None:
        overrides["batch_size"] = args.batch_size
    return overrides


def _describe_outliers(report: dict, percentile: float) -> str:
    processed = max(int(report["counts"]["processed"]), 1)
    share = 100.0 * int(report["outlier"]["n_outliers"]) / processed
    if report["outlier"]["source"] != "training":
        return f"{share:.1f} % of the images are outliers (threshold from the archive itself: the model has no card)."
    line = (f"{share:.1f} % of the images are outliers, against {percentile:g} % of the training images "
            "(below the training's similarity percentile)")
    if share > 3 * percentile:
        line += ": these images lie far from what the model was trained on; consider training on them"
    return line + "."


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command.

    Args:
        argv: arguments (``sys.argv[1:]`` when omitted).

    Returns:
        The exit status.
    """
    args = parse_args(argv)
    report_dir = os.path.join(args.output_dir, "report")
    try:
        key = pseudonymize_key(args)
        if not os.path.isdir(args.archive):
            raise FileNotFoundError(f"archive folder not found: {os.path.abspath(args.archive)}.")
        check_output_dir(report_dir, args.overwrite or args.resume)
        model_path = args.model
        if model_path is None:
            model_path = os.path.join(args.output_dir, "model", "model.pt")
            if args.resume and os.path.isfile(model_card_path(model_path)):
                print(f"monai-cae-stratify: training already complete ({model_path}); writing the report.")
            else:
                train_on_archive(args.archive, args.output_dir, args.img_size, args.bundle, args.resume,
                                 not args.quiet, **_training_overrides(args))
        device = torch.device(args.device)
        network = load_trained_model(model_path, device, img_size=args.img_size)
        report = generate_report(network, args.archive, report_dir, ReportOptions(
            modalities=selection(args.modalities),
            views=selection(args.views), body_parts=selection(args.body_parts), pseudonymize_key=key,
            overwrite=args.overwrite or args.resume, thumbnails=not args.no_thumbnails,
            outlier_threshold=training_outlier_threshold(model_path, args.outlier_percentile),
            outlier_percentile=args.outlier_percentile, model_path=model_path,
            cache_dir=os.path.join(args.output_dir, "train", "cache") if args.model is None else None,
            num_workers=args.num_workers, device=device, model_name=os.path.basename(model_path),
            progress=not args.quiet,
        ))
    except NoImagesError as e:
        print(f"monai-cae-stratify: {e}", file=sys.stderr)
        return 1
    except (OSError, ValueError, RuntimeError) as e:  # unusable archive, model, output folder or options
        print(f"monai-cae-stratify: {e}", file=sys.stderr)
        return 2
    if args.drop_cache:
        shutil.rmtree(os.path.join(args.output_dir, "train", "cache"), ignore_errors=True)
    counts = report["counts"]
    print(
        f"report written to {os.path.abspath(report_dir)}: {counts['processed']} images of {counts['patients']} "
        f"patients in {counts['strata_non_empty']} strata (of the model's {report['model']['num_strata']}), "
        f"{counts['skipped']} files skipped (see skipped.csv). "
        + _describe_outliers(report, args.outlier_percentile)
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
