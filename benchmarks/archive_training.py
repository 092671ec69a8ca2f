"""Training from an archive: the cache against decoding every epoch, and the cost of each input size.

    python benchmarks/archive_training.py                  # both parts
    python benchmarks/archive_training.py --parts sizes

- ``cache``: the bundle's phase-1 trainer (``train.json`` + ``archive.json``, 128 px, batch 32) on a generated
  DICOM archive (``data_prep/make_dicom_cohort.py``, 624 images of ``--cache-image-size`` px in 8 transfer
  syntaxes), once with the ``PersistentDataset`` cache and once decoding every file every epoch, the two runs
  alternating ``--repeats`` times. The second epoch is timed (the first builds the cache); images/s are medians.
- ``sizes``: the same trainer on the real cohort (``../shared/data/real_cxr``, 110 radiographs) at 28 / 64 / 128 /
  256 px with each size's preset, each in a fresh process: seconds of the second epoch and the process's peak RSS.

The end-to-end time of ``monai-cae-stratify`` on the real cohort is measured by ``benchmarks/real_cohort.py``.

The JSON goes to ``benchmarks/results/archive_training.json``. Run on an idle machine; the torch threads are
printed beside every figure.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile

from common import environment, save_json, second_epoch_seconds

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CONFIGS = os.path.join(REPO_ROOT, "bundles", "cae", "configs")


def epoch_seconds(archive: str, img_size: int, cache: bool, work_dir: str) -> dict:
    """Seconds of the second phase-1 epoch of the bundle's trainer on ``archive``, and this process's peak RSS."""
    import torch
    from monai.bundle import ConfigParser

    parser = ConfigParser()
    files = [os.path.join(CONFIGS, "train.json"), os.path.join(CONFIGS, "archive.json")]
    if os.path.isfile(os.path.join(CONFIGS, f"archive_{img_size}.json")):
        files.append(os.path.join(CONFIGS, f"archive_{img_size}.json"))
    parser.read_config(files)
    overrides = {
        "bundle_root": os.path.join(REPO_ROOT, "bundles", "cae"), "dataset_dir": archive, "img_size": img_size,
        "output_dir": work_dir, "model_dir": work_dir, "progress": False, "warmup_epochs": 2,
        "cache_dir": os.path.join(work_dir, "cache") if cache else None,
    }
    for key, value in overrides.items():
        parser[key] = value
    seconds = second_epoch_seconds(parser)
    loader = parser.get_parsed_content("train#dataloader")
    images = len(loader) * loader.batch_size
    return {"img_size": img_size, "cache": cache, "epoch_seconds": seconds, "images_per_second": images / seconds,
            "images_per_epoch": images, "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
            "torch_threads": torch.get_num_threads()}


def in_fresh_process(archive: str, img_size: int, cache: bool) -> dict:
    """:func:`epoch_seconds` in a new interpreter, so that its peak RSS is its own."""
    with tempfile.TemporaryDirectory() as work_dir:
        out = subprocess.run(
            [sys.executable, __file__, "--child", archive, str(img_size), str(int(cache)), work_dir],
            check=True, capture_output=True, text=True, cwd=REPO_ROOT,
        )
    return json.loads(out.stdout.strip().splitlines()[-1])


def cache_part(shared: str, image_size: int, repeats: int) -> dict:
    with tempfile.TemporaryDirectory() as folder:
        subprocess.run([sys.executable, os.path.join(REPO_ROOT, "data_prep", "make_dicom_cohort.py"), "--output",
                        folder, "--root", os.path.join(shared, "medmnist"), "--size", str(image_size), "--no-nifti"],
                       check=True, capture_output=True)
        runs: dict[str, list[dict]] = {"cache": [], "decode": []}
        for _ in range(repeats):
            for name in ("cache", "decode"):
                runs[name].append(in_fresh_process(os.path.join(folder, "dicom"), 128, name == "cache"))
                print(f"  {name}: {runs[name][-1]['images_per_second']:.1f} images/s", flush=True)
    medians = {name: statistics.median(r["images_per_second"] for r in rs) for name, rs in runs.items()}
    result = {"archive_image_size": image_size, "runs": runs, "median_images_per_second": medians,
              "cache_speedup": medians["cache"] / medians["decode"]}
    print(f"cache: {medians['cache']:.1f} images/s against {medians['decode']:.1f} decoding every epoch "
          f"({result['cache_speedup']:.2f}x), {image_size} px DICOM archive, 128 px model, "
          f"{runs['cache'][0]['torch_threads']} torch threads")
    return result


def sizes_part(shared: str) -> list[dict]:
    archive = os.path.join(shared, "real_cxr", "archive")
    results = []
    for size in (28, 64, 128, 256):
        results.append(in_fresh_process(archive, size, cache=True))
        r = results[-1]
        print(f"{size:>4} px: {r['epoch_seconds']:.2f} s per epoch ({r['images_per_epoch']} images, "
              f"{r['images_per_second']:.1f} images/s), peak RSS {r['peak_rss_mib']:.0f} MiB, "
              f"{r['torch_threads']} torch threads", flush=True)
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--parts", nargs="+", default=["cache", "sizes"], choices=["cache", "sizes"])
    parser.add_argument("--shared", default=os.path.join(REPO_ROOT, "..", "shared", "data"))
    parser.add_argument("--cache-image-size", type=int, default=1024, help="side of the generated DICOM images")
    parser.add_argument("--repeats", type=int, default=3, help="alternating runs of the cache comparison")
    parser.add_argument("--output", default=os.path.join(REPO_ROOT, "benchmarks", "results", "archive_training.json"))
    parser.add_argument("--child", nargs=4, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        archive, size, cache, work_dir = args.child
        print(json.dumps(epoch_seconds(archive, int(size), bool(int(cache)), work_dir)))
        return
    result: dict = {"environment": environment(), "omp_num_threads": os.environ.get("OMP_NUM_THREADS")}
    if "cache" in args.parts:
        result["cache"] = cache_part(args.shared, args.cache_image_size, args.repeats)
    if "sizes" in args.parts:
        result["sizes"] = sizes_part(args.shared)
    save_json(result, args.output)


if __name__ == "__main__":
    main()
