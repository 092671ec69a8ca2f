"""How training time per epoch and KMeans time grow with the size of the training set (1x, 2x, 4x, ...).

    python benchmarks/scaling.py                       # 1x, 2x, 4x training; KMeans also at 16x and 64x
    python benchmarks/scaling.py --train-scales 1 2 4 --kmeans-scales 1 2 4 16 64 --full-kmeans-up-to 4

Training: the bundle's phase-1 ``CAETrainer`` (``bundles/cae/configs/train.json``: same network, batch size,
augmentation, loss and optimizer) over the PneumoniaMNIST training split repeated ``s`` times, timed over its second
epoch (the first warms up the allocator and the loader). Linear scaling means seconds per epoch / s stays constant.

KMeans: the bundle's prototype discovery (:func:`monai_cae.clustering.elbow_kmeans` over k = 2..10, 10 restarts
each, silhouettes on 4,000 rows) on the bundled model's latents of the training split, repeated ``s`` times with a
little noise (so no two rows are equal). The full fit (every row in every Lloyd iteration) is timed up to
``--full-kmeans-up-to``; the default, which fits on a random subsample of ``kmeans_fit_sample`` rows (20,000) and
measures the inertia on every row, at every scale. Both print seconds and the ratio to 1x; the JSON goes to
``benchmarks/results/scaling.json``.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time

import numpy as np
from monai.bundle import ConfigParser
from monai.data import DataLoader

from monai_cae.clustering import elbow_kmeans
from monai_cae.data import make_dataset
from monai_cae.engines import embed_dataset, load_model
from monai_cae.networks.nets import ContrastiveAutoEncoder

from common import environment, save_json, second_epoch_seconds

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TRAIN_CONFIG = os.path.join(REPO_ROOT, "bundles", "cae", "configs", "train.json")


def epoch_seconds(scale: int, dataset_dir: str) -> dict:
    """Seconds of the second phase-1 epoch of the bundle's trainer over the training split repeated ``scale`` times."""
    with tempfile.TemporaryDirectory() as output_dir:
        parser = ConfigParser()
        parser.read_config(TRAIN_CONFIG)
        overrides = {
            "dataset_dir": dataset_dir, "output_dir": output_dir, "model_dir": output_dir, "progress": False,
            "warmup_epochs": 2,
            "train#dataset": "$torch.utils.data.ConcatDataset([monai_cae.data.make_dataset(@dataset_name, 'train', "
                             f"@dataset_dir, @img_size)] * {scale})",
        }
        for key, value in overrides.items():
            parser[key] = value
        seconds = second_epoch_seconds(parser)
        images = len(parser.get_parsed_content("train#dataset"))
    return {"scale": scale, "images": images, "seconds_per_epoch": seconds, "images_per_second": images / seconds}


def latents(model: str, dataset_dir: str) -> np.ndarray:
    network = load_model(ContrastiveAutoEncoder(), model, "cpu")
    loader = DataLoader(make_dataset("pneumoniamnist", "train", dataset_dir), batch_size=512, shuffle=False)
    features, _ = embed_dataset(network.encode, loader, "cpu", progress=False)
    return features


def kmeans_seconds(features: np.ndarray, scale: int, fit_sample: int | None) -> dict:
    rng = np.random.default_rng(scale)
    spread = features.std(0, keepdims=True)
    rows = np.concatenate([features] * scale)
    rows = rows + (0.05 * spread * rng.standard_normal(rows.shape)).astype(np.float32)
    start = time.perf_counter()
    result = elbow_kmeans(rows, range(2, 11), seed=0, fit_sample=fit_sample, progress=False)
    return {"scale": scale, "rows": len(rows), "seconds": time.perf_counter() - start, "k": result.k,
            "fit_sample": fit_sample}


def _print_rows(title: str, rows: list[dict], key: str, size_key: str) -> None:
    print(title)
    for row in rows:
        ratio = row[key] / rows[0][key]
        per_row = ratio / (row[size_key] / rows[0][size_key])
        row["ratio_to_1x"], row["ratio_per_row_to_1x"] = ratio, per_row
        print(f"  {row['scale']:>3}x ({row[size_key]:>7} {size_key}): {row[key]:8.2f} s = {ratio:6.2f}x the 1x time, "
              f"{per_row:5.2f}x per row", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dataset-dir", default=os.path.join(REPO_ROOT, "..", "shared", "data", "medmnist"))
    parser.add_argument("--model", default=os.path.join(REPO_ROOT, "bundles", "cae", "models", "model.pt"))
    parser.add_argument("--train-scales", type=int, nargs="*", default=[1, 2, 4])
    parser.add_argument("--kmeans-scales", type=int, nargs="*", default=[1, 2, 4, 16, 64])
    parser.add_argument("--full-kmeans-up-to", type=int, default=4, help="largest scale timed with the full fit")
    parser.add_argument("--fit-sample", type=int, default=20_000, help="subsample of the scalable fit")
    parser.add_argument("--output", default=os.path.join(REPO_ROOT, "benchmarks", "results", "scaling.json"))
    args = parser.parse_args()

    training = [epoch_seconds(scale, args.dataset_dir) for scale in args.train_scales]
    if training:
        _print_rows("bundle training, phase 1, seconds per epoch:", training, "seconds_per_epoch", "images")
    features = latents(args.model, args.dataset_dir) if args.kmeans_scales else None
    full = [kmeans_seconds(features, s, None) for s in args.kmeans_scales if s <= args.full_kmeans_up_to]
    if full:
        _print_rows("elbow KMeans (k = 2..10), full fit:", full, "seconds", "rows")
    sampled = [kmeans_seconds(features, s, args.fit_sample) for s in args.kmeans_scales]
    if sampled:
        _print_rows(f"elbow KMeans (k = 2..10), fit on {args.fit_sample} rows, inertia on all:", sampled, "seconds",
                    "rows")
    result = {
        "training": training, "kmeans_full": full, "kmeans_subsample_fit": sampled, **environment(),
    }
    save_json(result, args.output)


if __name__ == "__main__":
    main()
