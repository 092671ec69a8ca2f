"""Augmentation throughput: MONAI's per-sample positive-pair transform against the batched on-device path.

    python benchmarks/augmentation_throughput.py --batch-size 256 --img-size 28

Both make two augmented views of every image of the same batch with the same probabilities and magnitudes
(`monai_cae.transforms.PositivePair` image by image, `BatchPositivePair` on the whole batch). Prints pairs per
second for each and their ratio, and writes them to JSON.
"""

from __future__ import annotations

import argparse
import json
import time

import torch

from monai_cae.transforms import BatchPositivePair, PositivePair

from common import environment, save_json


def timed(fn, repeats: int) -> float:
    fn()
    start = time.perf_counter()
    for _ in range(repeats):
        fn()
    return (time.perf_counter() - start) / repeats


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--img-size", type=int, default=28)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--output", default="benchmarks/results/augmentation_throughput.json")
    args = parser.parse_args()

    batch = torch.rand(args.batch_size, 1, args.img_size, args.img_size)
    per_sample = PositivePair()
    per_sample.set_random_state(0)
    batched = BatchPositivePair(seed=0)
    on_device = batch.to(args.device)

    def run_per_sample() -> None:
        for image in batch:
            per_sample(image)

    def run_batched() -> None:
        batched(on_device)
        if args.device == "cuda":
            torch.cuda.synchronize()

    seconds_per_sample = timed(run_per_sample, max(1, args.repeats // 2))
    seconds_batched = timed(run_batched, args.repeats * 4)
    result = {
        "per_sample_pairs_per_second": args.batch_size / seconds_per_sample,
        "batched_pairs_per_second": args.batch_size / seconds_batched,
        "batched_over_per_sample": seconds_per_sample / seconds_batched,
        "batch_size": args.batch_size,
        "img_size": args.img_size,
        "device": args.device,
        **environment(),
    }
    print(json.dumps(result, indent=2))
    save_json(result, args.output)


if __name__ == "__main__":
    main()
