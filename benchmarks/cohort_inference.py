"""Throughput and peak memory of the cohort report against bare pydicom decoding of the same files.

    python benchmarks/cohort_inference.py --size 512                 # generates the PneumoniaMNIST test cohort
    python benchmarks/cohort_inference.py --archive data/cohort/dicom  # or any archive
    python benchmarks/cohort_inference.py --rss-images 1000 10000 50000 200000 --size 64   # memory as it grows

Times, each in a fresh process so that the peak RSS (``resource.getrusage``) belongs to that stage alone:

Every stage runs ``--repeats`` times, alternating, and the run of median throughput of each is reported.

- ``report``: the whole ``monai_cae.reports.generate_report`` (header scan, decoding with LUTs, preprocessing, model,
  tables, figures, HTML, atomic publishing), images per second over the images it processed; once with the default
  decoding processes (one per CPU) and once decoding in the main process;
- ``bare``: ``pydicom.dcmread(path).pixel_array`` and a resize to the model size (PIL, box filter) over the same
  files, the lower bound of any DICOM pipeline; once in one process and once split over as many processes as the
  report's default.

Prints the ratios (default report / bare in one process, the headline; in-process report / bare in one process; and
default report / bare in as many processes), the peak RSS of each, and writes the JSON to ``benchmarks/results/``.
With ``--baseline DIR`` (another checkout, e.g. ``git worktree add /tmp/before HEAD~3``) that checkout's default report
is timed too, alternating with this one's on the same files, and the ratio of the two is printed.
With ``--rss-images`` it instead generates archives of those sizes (the PneumoniaMNIST images repeated) and reports
the peak RSS of the main process and of the largest decoding process for each.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO_ROOT)  # monai_cae from this checkout, installed or not

from common import environment, save_json  # noqa: E402  (beside this script)


def _peak_rss_mib(who: int = resource.RUSAGE_SELF) -> float:
    # ru_maxrss is in KiB on Linux; for RUSAGE_CHILDREN it is the largest of the finished children (loader workers)
    return resource.getrusage(who).ru_maxrss / 1024


def stage_report(archive: str, model: str, img_size: int, batch_size: int, num_workers: int | None) -> dict:
    import torch

    from monai_cae.data import default_num_workers
    from monai_cae.engines import load_model
    from monai_cae.networks.nets import ContrastiveAutoEncoder
    from monai_cae.reports import generate_report

    network = load_model(ContrastiveAutoEncoder(img_size=img_size), model, "cpu")
    setup_rss = _peak_rss_mib()  # interpreter, torch, MONAI, pydicom and the model: what any run costs
    with tempfile.TemporaryDirectory() as folder:
        start = time.perf_counter()
        report = generate_report(
            network, archive, os.path.join(folder, "report"), batch_size=batch_size, num_workers=num_workers,
            progress=False,
        )
        seconds = time.perf_counter() - start
        with open(os.path.join(folder, "report", "manifest.csv"), newline="") as f:
            processed = [row["path"] for row in csv.DictReader(f) if row["status"] == "processed"]
    return {
        "seconds": seconds, "images": report["counts"]["processed"], "files": report["counts"]["files"],
        "images_per_second": report["counts"]["processed"] / seconds, "peak_rss_mib": _peak_rss_mib(),
        "rss_after_imports_and_model_mib": setup_rss, "peak_rss_worker_mib": _peak_rss_mib(resource.RUSAGE_CHILDREN),
        "processed_paths": processed, "torch_threads": torch.get_num_threads(),
        "num_workers": default_num_workers() if num_workers is None else num_workers,
    }


def _decode_and_resize(job: tuple[list[str], int]) -> tuple[int, int]:
    import numpy as np
    import pydicom
    from PIL import Image

    paths, img_size = job
    done = failed = 0
    for path in paths:
        try:
            pixels = pydicom.dcmread(path, force=True).pixel_array.astype(np.float32)
        except Exception:  # files without file meta need the transfer syntax set first; the report does that
            failed += 1
            continue
        Image.fromarray(pixels if pixels.ndim == 2 else pixels.mean(-1)).resize((img_size, img_size), Image.BOX)
        done += 1
    return done, failed


def stage_bare(paths: list[str], img_size: int, processes: int) -> dict:
    import multiprocessing

    start = time.perf_counter()
    if processes <= 1:
        done, failed = _decode_and_resize((paths, img_size))
    else:
        with multiprocessing.get_context("fork").Pool(processes) as pool:
            parts = pool.map(_decode_and_resize, [(paths[i::processes], img_size) for i in range(processes)])
        done, failed = (sum(part[i] for part in parts) for i in range(2))
    seconds = time.perf_counter() - start
    return {"seconds": seconds, "images": done, "failed": failed, "images_per_second": done / seconds,
            "processes": max(1, processes), "peak_rss_mib": _peak_rss_mib()}


def stage_generate(output: str, size: int, root: str, images: int | None) -> dict:
    import numpy as np

    sys.path.insert(0, os.path.join(REPO_ROOT, "data_prep"))
    from make_dicom_cohort import make_cohort

    from monai_cae.data import MedMNISTDataset

    split = "test" if images is None or images <= 624 else "train"
    data = MedMNISTDataset("pneumoniamnist", split, root)
    pixels = (data.images[:, 0].numpy() * 255).round().astype(np.uint8)
    labels = data.labels.numpy()
    if images is not None:  # the split's images repeated: distinct files, UIDs and patients, as many as asked
        order = np.arange(images) % len(pixels)
        pixels, labels = pixels[order], labels[order]
    return make_cohort(output, pixels, labels, size=size, nifti=False, progress=False)


def _run_stage(args: list[str], root: str = REPO_ROOT) -> dict:
    # a fresh process per stage: on Linux a child inherits its parent's peak RSS across fork, so the parent stays
    # light and each stage reports only its own memory; the stage runs the benchmark and the code of checkout ``root``
    env = {**os.environ, "PYTHONPATH": root + os.pathsep + os.environ.get("PYTHONPATH", "")}
    script = os.path.join(root, "benchmarks", os.path.basename(__file__))
    result = subprocess.run([sys.executable, script, *args], capture_output=True, text=True, env=env, cwd=root)
    if result.returncode != 0:
        raise RuntimeError(f"stage {args[:2]} failed:\n{result.stderr[-3000:]}")
    return json.loads(result.stdout.strip().splitlines()[-1])


def _archive_mib(archive: str) -> float:
    return sum(
        os.path.getsize(os.path.join(folder, name)) for folder, _, names in os.walk(archive) for name in names
    ) / 2**20


def _generate(scratch: str, name: str, args: argparse.Namespace, images: int | None) -> dict:
    command = ["--stage", "generate", "--archive", os.path.join(scratch, name), "--size", str(args.size), "--root",
               os.path.abspath(args.root)]
    return _run_stage(command + (["--images", str(images)] if images else []))


def _report_stage(archive: str, args: argparse.Namespace, num_workers: int | None, root: str = REPO_ROOT) -> dict:
    command = ["--stage", "report", "--archive", archive, "--model", args.model, "--img-size", str(args.img_size),
               "--batch-size", str(args.batch_size)]
    return _run_stage(command + ([] if num_workers is None else ["--num-workers", str(num_workers)]), root)


def _machine(args: argparse.Namespace) -> dict:
    return {"batch_size": args.batch_size, "img_size": args.img_size, **environment()}


def memory_scaling(args: argparse.Namespace) -> dict:
    """Peak RSS of the default report over generated archives of growing size."""
    rows = []
    with tempfile.TemporaryDirectory() as scratch:
        for count in args.rss_images:
            generated = _generate(scratch, f"cohort_{count}", args, count)
            report = _report_stage(generated["archive"], args, None)
            report.pop("processed_paths")
            rows.append({"images": count, "archive_mib": _archive_mib(generated["archive"]), **report})
            print(f"{count:>7} images: {report['images_per_second']:.1f} images/s, peak RSS main process "
                  f"{report['peak_rss_mib']:.0f} MiB, largest decoding process {report['peak_rss_worker_mib']:.0f} "
                  f"MiB ({report['num_workers']} workers)", flush=True)
            shutil.rmtree(os.path.join(scratch, f"cohort_{count}"))
    # from the first archive of at least 10,000 images: below that, caches and the figures' sample still fill up
    base = next((r for r in rows if r["images"] >= 10000), rows[0])
    growth = {key: rows[-1][key] / base[key] - 1 for key in ("peak_rss_mib", "peak_rss_worker_mib")}
    print(f"peak RSS growth from {base['images']} to {rows[-1]['images']} images: main process "
          f"{100 * growth['peak_rss_mib']:+.1f} %, largest decoding process {100 * growth['peak_rss_worker_mib']:+.1f} %")
    return {"memory_scaling": rows, "peak_rss_growth_from": base["images"], "peak_rss_growth": growth,
            "image_side": args.size, **_machine(args)}


def throughput(args: argparse.Namespace) -> dict:
    """Report (default workers and in-process) against bare decoding (one process and as many as the report)."""
    with tempfile.TemporaryDirectory() as scratch:
        archive, generated = args.archive, None
        if archive is None:
            generated = _generate(scratch, "cohort", args, None)
            archive = generated["archive"]
        runs: dict[str, list[dict]] = {"report": [], "in_process": [], "bare": [], "bare_parallel": []}
        if args.baseline:
            runs["baseline"] = []
        paths_file = os.path.join(scratch, "paths.txt")
        for _ in range(args.repeats):  # alternating, like training_throughput.py: one run swings by about 10 %
            report = _report_stage(archive, args, None)
            with open(paths_file, "w") as f:
                f.write("\n".join(report.pop("processed_paths")))
            in_process = _report_stage(archive, args, 0)
            in_process.pop("processed_paths")
            bare_command = ["--stage", "bare", "--paths", paths_file, "--img-size", str(args.img_size)]
            runs["report"].append(report)
            runs["in_process"].append(in_process)
            runs["bare"].append(_run_stage(bare_command))
            runs["bare_parallel"].append(
                _run_stage(bare_command + ["--processes", str(max(1, report["num_workers"]))])
            )
            if args.baseline:
                runs["baseline"].append(_report_stage(archive, args, None, os.path.abspath(args.baseline)))
                runs["baseline"][-1].pop("processed_paths")
        # the run of median throughput of each kind
        medians = {
            kind: sorted(stage, key=lambda run: run["images_per_second"])[(len(stage) - 1) // 2]
            for kind, stage in runs.items()
        }
        report, in_process, bare, bare_parallel = (medians[kind] for kind in ("report", "in_process", "bare",
                                                                              "bare_parallel"))
        archive_mib = _archive_mib(archive)

    result = {
        "report": report, "report_in_process": in_process, "bare_pydicom": bare, "bare_pydicom_parallel": bare_parallel,
        "ratio_report_to_bare": report["images_per_second"] / bare["images_per_second"],
        "ratio_in_process_report_to_bare": in_process["images_per_second"] / bare["images_per_second"],
        "ratio_report_to_parallel_bare": report["images_per_second"] / bare_parallel["images_per_second"],
        "images_per_second_per_run": {kind: [run["images_per_second"] for run in stage] for kind, stage in runs.items()},
        **({"baseline": {
            "checkout": os.path.abspath(args.baseline), "report": medians["baseline"],
            "ratio_report_to_baseline": report["images_per_second"] / medians["baseline"]["images_per_second"],
        }} if args.baseline else {}),
        "repeats": args.repeats,
        "archive": {"generated": generated is not None, "image_side": args.size if generated else None,
                    "files": report["files"], "mib_on_disk": archive_mib,
                    "transfer_syntaxes": generated["syntaxes"] if generated else None},
        **_machine(args),
    }
    unread = f" ({bare['failed']} files it could not decode)" if bare["failed"] else ""
    print(
        f"report, {report['num_workers']} decoding processes: {report['images']} images in {report['seconds']:.1f} s "
        f"= {report['images_per_second']:.1f} images/s, peak RSS {report['peak_rss_mib']:.0f} MiB main "
        f"({report['rss_after_imports_and_model_mib']:.0f} MiB after imports and model load), "
        f"{report['peak_rss_worker_mib']:.0f} MiB largest worker\n"
        f"report, decoding in-process: {in_process['images_per_second']:.1f} images/s, peak RSS "
        f"{in_process['peak_rss_mib']:.0f} MiB\n"
        f"bare pydicom decode + resize, 1 process: {bare['images']} images in {bare['seconds']:.1f} s = "
        f"{bare['images_per_second']:.1f} images/s, peak RSS {bare['peak_rss_mib']:.0f} MiB{unread}\n"
        f"bare pydicom decode + resize, {bare_parallel['processes']} processes: "
        f"{bare_parallel['images_per_second']:.1f} images/s\n"
        f"medians of {args.repeats} alternating runs; ratio report / bare (1 process): "
        f"{result['ratio_report_to_bare']:.2f}; in-process report / bare: "
        f"{result['ratio_in_process_report_to_bare']:.2f}; report / bare ({bare_parallel['processes']} processes): "
        f"{result['ratio_report_to_parallel_bare']:.2f}; archive {archive_mib:.0f} MiB on disk"
    )
    if args.baseline:
        baseline = medians["baseline"]
        print(f"baseline {args.baseline}, {baseline['num_workers']} decoding processes: "
              f"{baseline['images_per_second']:.1f} images/s; this checkout / baseline: "
              f"{result['baseline']['ratio_report_to_baseline']:.2f}")
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--archive", default=None, help="an existing archive; a cohort is generated when omitted")
    parser.add_argument("--size", type=int, default=512, help="side of the generated images (default 512)")
    parser.add_argument("--root", default="../shared/data/medmnist", help="folder holding pneumoniamnist.npz")
    parser.add_argument("--model", default="bundles/cae/models/model.pt")
    parser.add_argument("--img-size", type=int, default=28)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=3, help="alternating runs of each stage; medians compared")
    parser.add_argument("--baseline", default=None,
                        help="another checkout whose report is timed alternately with this one's (default: none)")
    parser.add_argument("--rss-images", type=int, nargs="+", default=None,
                        help="archive sizes for the memory measurement, e.g. 1000 10000 50000")
    parser.add_argument("--output", default=None, help="JSON path (default benchmarks/results/cohort_inference.json "
                        "or cohort_memory.json)")
    parser.add_argument("--stage", choices=("generate", "report", "bare"), help=argparse.SUPPRESS)
    parser.add_argument("--paths", help=argparse.SUPPRESS)
    parser.add_argument("--images", type=int, default=None, help=argparse.SUPPRESS)
    parser.add_argument("--num-workers", type=int, default=None, help=argparse.SUPPRESS)
    parser.add_argument("--processes", type=int, default=1, help=argparse.SUPPRESS)
    args = parser.parse_args()

    if args.stage == "generate":
        print(json.dumps(stage_generate(args.archive, args.size, args.root, args.images)))
    elif args.stage == "report":
        print(json.dumps(stage_report(args.archive, args.model, args.img_size, args.batch_size, args.num_workers)))
    elif args.stage == "bare":
        with open(args.paths) as f:
            print(json.dumps(stage_bare(f.read().splitlines(), args.img_size, args.processes)))
    elif args.rss_images:
        save_json(memory_scaling(args), os.path.join(REPO_ROOT, args.output or "benchmarks/results/cohort_memory.json"))
    else:
        save_json(throughput(args), os.path.join(REPO_ROOT, args.output or "benchmarks/results/cohort_inference.json"))


if __name__ == "__main__":
    main()
