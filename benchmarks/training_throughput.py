"""Training throughput of the bundle's real training loop against a minimal hand-written PyTorch loop.

    python benchmarks/training_throughput.py --epochs 6 --repeats 3

The bundle side parses `bundles/cae/configs/train.json` and runs its `training` workflow (CAETrainer with every
handler the config attaches: kNN probe, TensorBoard, stats, checkpoints, LR schedule) for warm-up epochs only. The
bare side builds the same network, data loader, batch size, augmentation, loss and optimizer from the same config
and loops over them by hand. Both are timed from the start of epoch 2 to the end of the last epoch, in augmented
pairs per second (forward and backward of both views). The two alternate ``--repeats`` times (bare, bundle, bare,
bundle, ...) and the medians are compared, because a single pair of runs on a small machine swings by 10-15 % with
the order and the allocator's warm state.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import tempfile
import time

import torch
from ignite.engine import Events
from monai.bundle import ConfigParser
from monai.utils import set_determinism

from common import environment, save_json

CONFIG = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "bundles", "cae", "configs",
                      "train.json")


def parser_for(epochs: int, output_dir: str, overrides: dict) -> ConfigParser:
    parser = ConfigParser()
    parser.read_config(CONFIG)
    parser.update({"max_epochs": epochs, "warmup_epochs": epochs, "progress": False,
                   "output_dir": output_dir, "model_dir": os.path.join(output_dir, "models"), **overrides})
    return parser


def bundle_loop(epochs: int, overrides: dict) -> tuple[float, int]:
    with tempfile.TemporaryDirectory() as output_dir:
        parser = parser_for(epochs, output_dir, overrides)
        trainer = parser.get_parsed_content("train#trainer")
        marks: dict[str, float] = {}
        trainer.add_event_handler(Events.EPOCH_STARTED(once=2), lambda: marks.setdefault("start", time.perf_counter()))
        trainer.add_event_handler(Events.EPOCH_COMPLETED(once=epochs), lambda: marks.setdefault("end",
                                                                                               time.perf_counter()))
        parser.get_parsed_content("training")
        pairs = (epochs - 1) * trainer.state.epoch_length * parser.get_parsed_content("batch_size")
        return marks["end"] - marks["start"], pairs


def bare_loop(epochs: int, overrides: dict) -> tuple[float, int]:
    with tempfile.TemporaryDirectory() as output_dir:
        parser = parser_for(epochs, output_dir, overrides)
        set_determinism(parser.get_parsed_content("seed"))
        network = parser.get_parsed_content("network")
        loader = parser.get_parsed_content("train#dataloader")
        augment = parser.get_parsed_content("train#augmentation")
        loss_function = parser.get_parsed_content("loss")
        optimizer = parser.get_parsed_content("optimizer")
        device = parser.get_parsed_content("device")
        pairs = 0
        for epoch in range(1, epochs + 1):
            if epoch == 2:
                start = time.perf_counter()
            for batch in loader:
                images = batch["image"].to(device)
                with torch.no_grad():
                    view1, view2 = augment(images)
                network.train()
                optimizer.zero_grad(set_to_none=True)
                _, z1, y1 = network(view1)
                _, z2, y2 = network(view2)
                loss_function(z1, z2, view1, y1, view2, y2)["total"].backward()
                optimizer.step()
                if epoch >= 2:
                    pairs += len(images)
        return time.perf_counter() - start, pairs


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--epochs", type=int, default=6)
    parser.add_argument("--repeats", type=int, default=3, help="alternating runs of each loop; medians compared")
    parser.add_argument("--dataset-dir", default=None, help="override the bundle's dataset_dir")
    parser.add_argument("--output", default="benchmarks/results/training_throughput.json")
    args = parser.parse_args()
    overrides = {} if args.dataset_dir is None else {"dataset_dir": args.dataset_dir}
    runs: dict[str, list[float]] = {"bare": [], "bundle": []}
    for _ in range(args.repeats):
        for name, loop in (("bare", bare_loop), ("bundle", bundle_loop)):
            seconds, pairs = loop(args.epochs, overrides)
            runs[name].append(pairs / seconds)
            print(f"{name}: {pairs / seconds:.1f} pairs/s", flush=True)
    bare, bundle = statistics.median(runs["bare"]), statistics.median(runs["bundle"])
    result = {
        "bundle_pairs_per_second": bundle,
        "bare_pairs_per_second": bare,
        "bundle_over_bare": bundle / bare,
        "runs_pairs_per_second": runs,
        "epochs_timed": args.epochs - 1,
        **environment(),
    }
    print(json.dumps(result, indent=2))
    save_json(result, args.output)


if __name__ == "__main__":
    main()
