"""Small-batch training with and without NT-Xent's queue of negatives: kNN accuracy of the latent space.

NT-Xent needs many negatives; a queue of earlier batches' projections (``negative_queue_size`` in the bundle, see
:class:`monai_cae.losses.NTXentLoss`) supplies them without the memory of a large batch. This trains the bundle's
phase 1 (``train.json``: same network, augmentation, optimizer and schedule) at one small batch size for each queue
size, then reports the kNN (k = 5) accuracy of the latent ``h`` on the validation and test splits against a memory
bank of the training split (Ferrante et al. 2022, evaluation (b)), through ``monai_cae.evaluation.knn_votes``.

    python benchmarks/negative_queue.py --batch-size 32 --queue-sizes 0 512 --epochs 20 --seeds 0 1 2
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time

import torch
from monai.bundle import ConfigParser
from monai.data import DataLoader
from monai.utils import set_determinism

from monai_cae.data import make_dataset
from monai_cae.engines import embed_dataset
from monai_cae.evaluation import knn_votes

from common import environment, save_json

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TRAIN_CONFIG = os.path.join(REPO_ROOT, "bundles", "cae", "configs", "train.json")


def train(queue_size: int, args: argparse.Namespace, seed: int, output_dir: str) -> torch.nn.Module:
    """Phase 1 of the bundle's training with the given queue size; returns the trained network."""
    parser = ConfigParser()
    parser.read_config(TRAIN_CONFIG)
    overrides = {
        "dataset_dir": args.dataset_dir,
        "dataset_name": args.dataset,
        "output_dir": output_dir,
        "model_dir": output_dir,
        "batch_size": args.batch_size,
        "negative_queue_size": queue_size,
        "seed": seed,
        "progress": False,
        "max_epochs": args.epochs,
        "warmup_epochs": args.epochs,
        "lr_warmup_epochs": max(1, args.epochs // 10),
        # the learning-rate schedule only: no validation, logging or prototype discovery inside the timed run
        "train#trainer#train_handlers": "$[@train#handlers#0]",
    }
    if args.train_subset:
        overrides["train#dataset"] = (
            "$torch.utils.data.Subset(monai_cae.data.make_dataset(@dataset_name, 'train', @dataset_dir, @img_size), "
            f"list(range({args.train_subset})))"
        )
    for key, value in overrides.items():
        parser[key] = value
    set_determinism(seed=seed)
    parser.get_parsed_content("train#trainer").run()
    return parser.get_parsed_content("network")


def knn_accuracy(network: torch.nn.Module, args: argparse.Namespace, device: torch.device) -> dict[str, float]:
    def features(split: str) -> tuple[torch.Tensor, torch.Tensor]:
        loader = DataLoader(make_dataset(args.dataset, split, args.dataset_dir), batch_size=512, shuffle=False)
        h, labels = embed_dataset(network.encode, loader, device, progress=False)
        return torch.from_numpy(h), torch.from_numpy(labels)

    network.eval()
    bank, bank_labels = features("train")
    accuracy = {}
    for split in ("val", "test"):
        queries, labels = features(split)
        votes = knn_votes(bank, bank_labels, queries, 5, int(bank_labels.max()) + 1)
        accuracy[split] = float((votes.argmax(1) == labels).float().mean())
    return accuracy


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dataset", default="pneumoniamnist")
    parser.add_argument("--dataset-dir", default=os.path.join(REPO_ROOT, "..", "shared", "data", "medmnist"))
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--queue-sizes", type=int, nargs="+", default=[0, 4096])
    parser.add_argument("--epochs", type=int, default=20)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0])
    parser.add_argument("--train-subset", type=int, default=0, help="train on the first N images only (0: all)")
    parser.add_argument("--output", default="benchmarks/results/negative_queue.json", help="JSON file for the results")
    args = parser.parse_args()
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")

    runs = []
    for queue_size in args.queue_sizes:
        for seed in args.seeds:
            with tempfile.TemporaryDirectory() as output_dir:
                start = time.perf_counter()
                network = train(queue_size, args, seed, output_dir)
                seconds = time.perf_counter() - start
            run = {"queue_size": queue_size, "seed": seed, "train_seconds": seconds,
                   "knn_accuracy": knn_accuracy(network, args, device)}
            print(json.dumps(run), flush=True)
            runs.append(run)
    result = {
        "runs": runs,
        "batch_size": args.batch_size,
        "epochs": args.epochs,
        "dataset": args.dataset,
        "train_subset": args.train_subset,
        "device": str(device),
        **environment(),
    }
    save_json(result, args.output)


if __name__ == "__main__":
    main()
