"""Throughput and peak memory of the cohort report against bare pydicom decoding of the same files.

    python benchmarks/cohort_inference.py --size 512                 # generates the PneumoniaMNIST test cohort
    python benchmarks/cohort_inference.py --archive data/cohort/dicom  # or any archive

Times, each in a fresh process so that the peak RSS (``resource.getrusage``) belongs to that stage alone:

- ``report``: the whole ``monai_cae.reports.generate_report`` (header scan, decoding with LUTs, preprocessing, model,
  tables, figures, HTML, atomic publishing), images per second over the images it processed;
- ``bare``: ``pydicom.dcmread(path).pixel_array`` and a resize to the model size (PIL, box filter) over the same
  files, the lower bound of any DICOM pipeline.

Prints both, their ratio and the peak RSS of each, and writes the JSON to ``benchmarks/results/``.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO_ROOT)  # monai_cae from this checkout, installed or not


def _peak_rss_mib() -> float:
    # ru_maxrss is in KiB on Linux
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def stage_report(archive: str, model: str, img_size: int, batch_size: int, num_workers: int) -> dict:
    import torch

    from monai_cae.engines import load_model
    from monai_cae.networks.nets import ContrastiveAutoEncoder
    from monai_cae.reports import generate_report

    network = load_model(ContrastiveAutoEncoder(img_size=img_size), model, "cpu")
    setup_rss = _peak_rss_mib()  # interpreter, torch, MONAI, pydicom and the model: what any run costs
    with tempfile.TemporaryDirectory() as folder:
        start = time.perf_counter()
        report = generate_report(
            network, archive, os.path.join(folder, "report"), img_size=img_size, batch_size=batch_size,
            num_workers=num_workers, progress=False,
        )
        seconds = time.perf_counter() - start
        with open(os.path.join(folder, "report", "manifest.csv"), newline="") as f:
            processed = [row["path"] for row in csv.DictReader(f) if row["status"] == "processed"]
    return {
        "seconds": seconds, "images": report["counts"]["processed"], "files": report["counts"]["files"],
        "images_per_second": report["counts"]["processed"] / seconds, "peak_rss_mib": _peak_rss_mib(),
        "rss_after_imports_and_model_mib": setup_rss,
        "processed_paths": processed, "torch_threads": torch.get_num_threads(),
    }


def stage_bare(paths: list[str], img_size: int) -> dict:
    import numpy as np
    import pydicom
    from PIL import Image

    start, done, failed = time.perf_counter(), 0, 0
    for path in paths:
        try:
            pixels = pydicom.dcmread(path, force=True).pixel_array.astype(np.float32)
        except Exception:  # files without file meta need the transfer syntax set first; the report does that
            failed += 1
            continue
        Image.fromarray(pixels if pixels.ndim == 2 else pixels.mean(-1)).resize((img_size, img_size), Image.BOX)
        done += 1
    seconds = time.perf_counter() - start
    return {"seconds": seconds, "images": done, "failed": failed, "images_per_second": done / seconds,
            "peak_rss_mib": _peak_rss_mib()}


def stage_generate(output: str, size: int, root: str) -> dict:
    import numpy as np

    sys.path.insert(0, os.path.join(REPO_ROOT, "data_prep"))
    from make_dicom_cohort import make_cohort

    from monai_cae.data import MedMNISTDataset

    data = MedMNISTDataset("pneumoniamnist", "test", root)
    images = (data.images[:, 0].numpy() * 255).round().astype(np.uint8)
    return make_cohort(output, images, data.labels.numpy(), size=size, nifti=False, progress=False)


def _run_stage(args: list[str]) -> dict:
    # a fresh process per stage: on Linux a child inherits its parent's peak RSS across fork, so the parent stays
    # light and each stage reports only its own memory
    env = {**os.environ, "PYTHONPATH": REPO_ROOT + os.pathsep + os.environ.get("PYTHONPATH", "")}
    result = subprocess.run([sys.executable, __file__, *args], capture_output=True, text=True, env=env, cwd=REPO_ROOT)
    if result.returncode != 0:
        raise RuntimeError(f"stage {args[:2]} failed:\n{result.stderr[-3000:]}")
    return json.loads(result.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--archive", default=None, help="an existing archive; a cohort is generated when omitted")
    parser.add_argument("--size", type=int, default=512, help="side of the generated images (default 512)")
    parser.add_argument("--root", default="../shared/data/medmnist", help="folder holding pneumoniamnist.npz")
    parser.add_argument("--model", default="bundles/cae/models/model.pt")
    parser.add_argument("--img-size", type=int, default=28)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--num-workers", type=int, default=0)
    parser.add_argument("--output", default="benchmarks/results/cohort_inference.json")
    parser.add_argument("--stage", choices=("generate", "report", "bare"), help=argparse.SUPPRESS)
    parser.add_argument("--paths", help=argparse.SUPPRESS)
    args = parser.parse_args()

    if args.stage == "generate":
        print(json.dumps(stage_generate(args.archive, args.size, args.root)))
        return
    if args.stage == "report":
        print(json.dumps(stage_report(args.archive, args.model, args.img_size, args.batch_size, args.num_workers)))
        return
    if args.stage == "bare":
        with open(args.paths) as f:
            print(json.dumps(stage_bare(f.read().splitlines(), args.img_size)))
        return

    with tempfile.TemporaryDirectory() as scratch:
        archive, generated = args.archive, None
        if archive is None:
            generated = _run_stage(["--stage", "generate", "--archive", os.path.join(scratch, "cohort"), "--size",
                                    str(args.size), "--root", os.path.abspath(args.root)])
            archive = generated["archive"]
        archive_mib = sum(
            os.path.getsize(os.path.join(folder, name)) for folder, _, names in os.walk(archive) for name in names
        ) / 2**20
        report = _run_stage(["--stage", "report", "--archive", archive, "--model", args.model, "--img-size",
                             str(args.img_size), "--batch-size", str(args.batch_size), "--num-workers",
                             str(args.num_workers)])
        paths_file = os.path.join(scratch, "paths.txt")
        with open(paths_file, "w") as f:
            f.write("\n".join(report.pop("processed_paths")))
        bare = _run_stage(["--stage", "bare", "--paths", paths_file, "--img-size", str(args.img_size)])

    result = {
        "report": report,
        "bare_pydicom": bare,
        "ratio_report_to_bare": report["images_per_second"] / bare["images_per_second"],
        "archive": {"generated": generated is not None, "image_side": args.size if generated else None,
                    "files": report["files"], "mib_on_disk": archive_mib,
                    "transfer_syntaxes": generated["syntaxes"] if generated else None},
        "batch_size": args.batch_size, "num_workers": args.num_workers, "img_size": args.img_size,
        "cpu_count": os.cpu_count(), "machine": platform.processor() or platform.machine(),
        "python": platform.python_version(),
    }
    unread = f" ({bare['failed']} files it could not decode)" if bare["failed"] else ""
    print(
        f"report: {report['images']} images in {report['seconds']:.1f} s = {report['images_per_second']:.1f} images/s, "
        f"peak RSS {report['peak_rss_mib']:.0f} MiB ({report['rss_after_imports_and_model_mib']:.0f} MiB after "
        "imports and model load)\n"
        f"bare pydicom decode + resize: {bare['images']} images in {bare['seconds']:.1f} s = "
        f"{bare['images_per_second']:.1f} images/s, peak RSS {bare['peak_rss_mib']:.0f} MiB"
        f"{unread}\n"
        f"ratio report / bare: {result['ratio_report_to_bare']:.2f}; archive {archive_mib:.0f} MiB on disk"
    )
    os.makedirs(os.path.dirname(os.path.join(REPO_ROOT, args.output)), exist_ok=True)
    with open(os.path.join(REPO_ROOT, args.output), "w") as f:
        json.dump(result, f, indent=2)


if __name__ == "__main__":
    main()
