"""``monai-cae-report``: the strata report of an image archive, from the command line.

    monai-cae-report ARCHIVE OUTPUT --model bundles/cae/models/model.pt [--pseudonymize-key-file KEY.txt]

Exit status: 0 when a report was written, 1 when no image could be processed (the folder still lists every file
and why), 2 when the model, the archive or the output folder is unusable (nothing is written).
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence

import torch

from monai_cae.data.dicom import RADIOGRAPH_MODALITIES
from monai_cae.engines.strata import load_model
from monai_cae.networks.nets import ContrastiveAutoEncoder

from .pipeline import generate_report
from .writer import NoImagesError

__all__ = ["main", "parse_args"]


def _filter(values: Sequence[str] | None) -> list[str] | None:
    # "any" switches a filter off
    return None if values is None or [v.lower() for v in values] == ["any"] else list(values)


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    """Parse the command line (see ``monai-cae-report --help``)."""
    parser = argparse.ArgumentParser(
        prog="monai-cae-report", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("input_dir", help="archive folder (DICOM with or without .dcm, NIfTI, PNG/JPEG), recursive")
    parser.add_argument("output_dir", help="report folder to create")
    parser.add_argument("--model", required=True, help="trained model.pt (state dict with prototypes)")
    parser.add_argument("--img-size", type=int, default=28, help="the model's input size (default 28)")
    parser.add_argument("--latent-size", type=int, default=128, help="the model's latent size (default 128)")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing report")
    key = parser.add_mutually_exclusive_group()
    key.add_argument("--pseudonymize", metavar="KEY", help="replace PatientID and UIDs by HMAC-SHA256 under KEY")
    key.add_argument("--pseudonymize-key-file", metavar="FILE", help="the same, reading KEY from a file")
    parser.add_argument("--no-thumbnails", action="store_true", help="no example images in report.html")
    parser.add_argument("--modalities", nargs="+", default=list(RADIOGRAPH_MODALITIES),
                        help="accepted DICOM modalities, or 'any' (default CR DX DR)")
    parser.add_argument("--views", nargs="+", default=None, help="accepted ViewPosition values, e.g. PA AP")
    parser.add_argument("--body-parts", nargs="+", default=None, help="accepted BodyPartExamined, e.g. CHEST")
    parser.add_argument("--outlier-threshold", type=float, default=None,
                        help="fixed cosine similarity to the nearest prototype below which an image is an outlier")
    parser.add_argument("--outlier-percentile", type=float, default=1.0,
                        help="else this percentile of the reference (or cohort) similarities (default 1)")
    parser.add_argument("--reference-embeddings", default=None,
                        help="training latents (runs/train/prototypes/embeddings.npy) that calibrate the outliers")
    parser.add_argument("--cache-dir", default=None, help="cache of preprocessed images (PersistentDataset)")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument(
        "--num-workers", type=int, default=None, help="decoding processes (default: one per CPU; 0 decodes in-process)"
    )
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--quiet", action="store_true", help="no progress bars")
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command.

    Args:
        argv: arguments (``sys.argv[1:]`` when omitted).

    Returns:
        The exit status.
    """
    args = parse_args(argv)
    try:
        key = args.pseudonymize
        if args.pseudonymize_key_file:
            with open(args.pseudonymize_key_file, encoding="utf-8") as f:
                key = f.read().strip()
            if not key:
                raise ValueError(f"the key file {args.pseudonymize_key_file} is empty.")
        device = torch.device(args.device)
        network = load_model(
            ContrastiveAutoEncoder(img_size=args.img_size, latent_size=args.latent_size), args.model, device
        )
        report = generate_report(
            network, args.input_dir, args.output_dir, img_size=args.img_size, modalities=_filter(args.modalities),
            views=_filter(args.views), body_parts=_filter(args.body_parts), pseudonymize_key=key,
            overwrite=args.overwrite, thumbnails=not args.no_thumbnails, outlier_threshold=args.outlier_threshold,
            outlier_percentile=args.outlier_percentile, reference_embeddings=args.reference_embeddings,
            cache_dir=args.cache_dir, batch_size=args.batch_size, num_workers=args.num_workers, device=device,
            model_name=os.path.basename(args.model), progress=not args.quiet,
        )
    except NoImagesError as e:
        print(f"monai-cae-report: {e}", file=sys.stderr)
        return 1
    except (OSError, ValueError, RuntimeError) as e:  # unusable model, archive or output folder
        print(f"monai-cae-report: {e}", file=sys.stderr)
        return 2
    counts = report["counts"]
    print(
        f"report written to {os.path.abspath(args.output_dir)}: {counts['processed']} images of "
        f"{counts['patients']} patients in {report['model']['num_strata']} strata, {counts['skipped']} files "
        "skipped (see skipped.csv)."
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
