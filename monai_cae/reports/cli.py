"""``monai-cae-report``: the strata report of an image archive, from the command line.

    monai-cae-report ARCHIVE OUTPUT --model bundles/cae/models/model.pt [--pseudonymize-key-file KEY.txt]

Chest radiographs are selected by default (DICOM CR, DX, DR with BodyPartExamined CHEST or empty); ``--body-parts
any`` (and ``--modalities any``) switch a filter off.

Name strata after reading a report, without writing one (an empty name removes a name):

    monai-cae-report --model bundles/cae/models/model.pt --name-stratum 2 "portable AP films"

The names are kept beside the model (``strata_names.json``) and shown in every later report of it; given with an
archive and an output folder, ``--name-stratum`` names first, then writes the report.

Exit status: 0 when a report was written (or the strata named), 1 when no image could be processed (the folder
still lists every file and why), 2 when the model, the archive or the output folder is unusable (nothing is
written).
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence

import torch

from monai_cae.data.dicom import RADIOGRAPH_MODALITIES
from monai_cae.data.manifest import CHEST_BODY_PARTS
from monai_cae.data.unusable import DEFAULT_MAX_PIXELS
from monai_cae.engines.model_card import load_trained_model

from .options import ReportOptions
from .pipeline import generate_report
from .strata_names import read_stratum_names, write_stratum_names
from .tables import OutlierThreshold, training_outlier_threshold
from .staging import NoImagesError

__all__ = ["main", "outlier_threshold", "parse_args", "pseudonymize_key", "selection"]


def selection(values: Sequence[str] | None) -> list[str] | None:
    """A DICOM filter from the command line: the values given, or ``None`` (no filter) for none or ``any``."""
    return None if values is None or [v.lower() for v in values] == ["any"] else list(values)


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    """Parse the command line (see ``monai-cae-report --help``)."""
    parser = argparse.ArgumentParser(
        prog="monai-cae-report", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("input_dir", nargs="?",
                        help="archive folder (DICOM with or without .dcm, NIfTI, PNG/JPEG), recursive")
    parser.add_argument("output_dir", nargs="?", help="report folder to create")
    parser.add_argument("--model", required=True, help="trained model.pt (state dict with prototypes)")
    parser.add_argument("--img-size", type=int, default=None,
                        help="the model's input size, for a model without model.json beside it (default 28)")
    parser.add_argument("--latent-size", type=int, default=128, help="the model's latent size (default 128)")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing report")
    key = parser.add_mutually_exclusive_group()
    key.add_argument("--pseudonymize", metavar="KEY", help="replace PatientID and UIDs by HMAC-SHA256 under KEY")
    key.add_argument("--pseudonymize-key-file", metavar="FILE", help="the same, reading KEY from a file")
    parser.add_argument("--no-thumbnails", action="store_true", help="no example images in report.html")
    parser.add_argument("--modalities", nargs="+", default=list(RADIOGRAPH_MODALITIES),
                        help="accepted DICOM modalities, or 'any' (default CR DX DR)")
    parser.add_argument("--views", nargs="+", default=None, help="accepted ViewPosition values, e.g. PA AP")
    parser.add_argument("--body-parts", nargs="+", default=list(CHEST_BODY_PARTS),
                        help="accepted BodyPartExamined (an empty tag passes), or 'any' (default CHEST)")
    parser.add_argument("--name-stratum", nargs=2, action="append", default=[], metavar=("INDEX", "NAME"),
                        help="name a stratum of the model (repeatable; an empty NAME removes the name); alone, "
                             "without ARCHIVE and OUTPUT, it only names")
    parser.add_argument("--outlier-threshold", type=float, default=None,
                        help="fixed cosine similarity to the nearest prototype below which an image is an outlier")
    parser.add_argument("--outlier-percentile", type=float, default=1.0,
                        help="else this percentile of the reference (or cohort) similarities (default 1)")
    parser.add_argument("--reference-embeddings", default=None,
                        help="training latents (runs/train/prototypes/embeddings.npy) that calibrate the outliers")
    parser.add_argument("--max-pixels", type=int, default=DEFAULT_MAX_PIXELS,
                        help="largest image accepted, checked before decoding (default 8192 x 8192)")
    parser.add_argument("--cache-dir", default=None, help="cache of preprocessed images (PersistentDataset)")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument(
        "--num-workers", type=int, default=None, help="decoding processes (default: one per CPU; 0 decodes in-process)"
    )
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--quiet", action="store_true", help="no progress bars")
    args = parser.parse_args(argv)
    if (args.input_dir is None or args.output_dir is None) and not (args.input_dir is None and args.name_stratum):
        parser.error("ARCHIVE and OUTPUT are required unless --name-stratum is given alone.")
    for index, _ in args.name_stratum:
        if not index.isdigit():
            parser.error(f"--name-stratum INDEX must be a stratum number, got {index!r}.")
    return args


def _name_strata(model_path: str, names: Sequence[Sequence[str]]) -> dict[int, str]:
    updated = read_stratum_names(model_path)
    for index, name in names:
        updated[int(index)] = name
    return write_stratum_names(model_path, updated)


def pseudonymize_key(args: argparse.Namespace) -> str | None:
    """The HMAC key of ``--pseudonymize KEY`` or ``--pseudonymize-key-file FILE``, ``None`` without either.

    Raises:
        ValueError: for an empty key file.
        OSError: for a key file that cannot be read.
    """
    if not args.pseudonymize_key_file:
        return args.pseudonymize
    with open(args.pseudonymize_key_file, encoding="utf-8") as f:
        key = f.read().strip()
    if not key:
        raise ValueError(f"the key file {args.pseudonymize_key_file} is empty.")
    return key


def outlier_threshold(args: argparse.Namespace) -> float | OutlierThreshold | None:
    """The outlier threshold of a run: ``--outlier-threshold``; else, without ``--reference-embeddings``, the training
    images' similarity percentile that the model card keeps; else ``None`` (the reference or the cohort decides)."""
    if args.outlier_threshold is not None or args.reference_embeddings is not None:
        return args.outlier_threshold
    return training_outlier_threshold(args.model, args.outlier_percentile)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command.

    Args:
        argv: arguments (``sys.argv[1:]`` when omitted).

    Returns:
        The exit status.
    """
    args = parse_args(argv)
    try:
        if args.name_stratum:
            named = _name_strata(args.model, args.name_stratum)
            print(f"strata of {args.model}: " + ("; ".join(f"{j} = {n}" for j, n in named.items()) or "no names"))
            if args.input_dir is None:
                return 0
        key = pseudonymize_key(args)
        device = torch.device(args.device)
        network = load_trained_model(
            args.model, device, img_size=args.img_size or 28, latent_size=args.latent_size
        )
        report = generate_report(network, args.input_dir, args.output_dir, ReportOptions(
            modalities=selection(args.modalities), views=selection(args.views), body_parts=selection(args.body_parts),
            pseudonymize_key=key, overwrite=args.overwrite, thumbnails=not args.no_thumbnails,
            outlier_threshold=outlier_threshold(args),
            outlier_percentile=args.outlier_percentile, reference_embeddings=args.reference_embeddings,
            cache_dir=args.cache_dir, batch_size=args.batch_size, num_workers=args.num_workers, device=device,
            model_name=os.path.basename(args.model), progress=not args.quiet, model_path=args.model,
            max_pixels=args.max_pixels,
        ))
    except NoImagesError as e:
        print(f"monai-cae-report: {e}", file=sys.stderr)
        return 1
    except (OSError, ValueError, RuntimeError) as e:  # unusable model, archive or output folder
        print(f"monai-cae-report: {e}", file=sys.stderr)
        return 2
    counts = report["counts"]
    empty = counts["strata_empty"]
    print(
        f"report written to {os.path.abspath(args.output_dir)}: {counts['processed']} images of "
        f"{counts['patients']} patients in {counts['strata_non_empty']} strata"
        + (f" ({empty} of the model's {report['model']['num_strata']} strata empty)" if empty else "")
        + f", {counts['skipped']} files skipped (see skipped.csv); outlier threshold from "
        + {"training": "the training images", "cohort": "this cohort itself", "fixed": "--outlier-threshold"}[
            report["outlier"]["source"]] + "."
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
