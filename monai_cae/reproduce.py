"""Reproduce Table 1 of Ferrante et al. 2022: train, evaluate and compare against the baselines, over seeds.

    python -m monai_cae.reproduce --dataset pneumoniamnist --seeds 3
    python -m monai_cae.reproduce --dataset mnist --seeds 3

For each seed it trains the bundle (``bundles/cae/configs/train.json`` plus the dataset preset from ``configs/``),
scores the model with the published protocol (stat, kNN, linear), and runs the baselines on the same splits by the
same code: PCA of the raw pixels + KMeans (at the CAE's number of clusters and at its own elbow), a supervised
ResNet-18 trained from scratch, and that ResNet-18's features + KMeans. It writes ``results.json`` (every seed) and
``results.md`` (mean ± standard deviation over seeds, the paper's numbers beside them) into ``--output-dir``, and the
figures of the first seed.

``--negatives cluster_aware`` trains the CAE with cluster-aware NT-Xent negatives (the bundle's ``negatives`` option)
instead of plain ones; its rows are then named ``CAE, cluster-aware negatives`` and the default output folder is
``runs/reproduce/<dataset>-cluster_aware``, so the two variants can be run side by side and compared.

``--local-branch`` adds the local pixel-level branch (the bundle's ``local_branch``; rows ``CAE, local branch``,
folder suffix ``-local``). ``--cae-only`` leaves the baselines out, for comparing CAE variants in less time.

Wall time on 2 CPU cores (measured): about 8 minutes per seed for PneumoniaMNIST and 11 for MNIST with the defaults.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import os
import time
from collections import defaultdict
from collections.abc import Sequence

import numpy as np
import torch
from monai.bundle import run as run_bundle
from monai.utils import set_determinism

from monai_cae.clustering import ElbowResult, elbow_kmeans
from monai_cae.data import make_dataset
from monai_cae.engines import load_model
from monai_cae.evaluation import (
    classification_metrics,
    evaluate_model,
    evaluate_representation,
    kmeans_assigner,
    pca_features,
    resnet_features,
    resnet_predict,
    results_markdown,
    train_supervised_resnet18,
)
from monai_cae.handlers import NEGATIVES
from monai_cae.networks.nets import ContrastiveAutoEncoder

__all__ = ["PAPER_TABLE", "cae_model_name", "cae_variant", "reproduce"]

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# Ferrante et al. 2022, Table 1: accuracy of each model (the paper does not say which average its precision and
# recall use, so only accuracy is compared).
PAPER_TABLE: dict[str, dict[tuple[str, str], float]] = {
    "pneumoniamnist": {
        ("ResNet-18 supervised", "-"): {"test": 0.74, "val": 0.86},
        ("ResNet-18 features + KMeans", "stat"): {"test": 0.69, "val": 0.78},
        ("CAE", "stat"): {"test": 0.73, "val": 0.80},
        ("CAE", "knn"): {"test": 0.84, "val": 0.84},
        ("CAE", "linear"): {"test": 0.84, "val": 0.84},
    },
    "mnist": {
        ("ResNet-18 supervised", "-"): {"test": 0.995},
        ("ResNet-18 features + KMeans", "stat"): {"test": 0.69},
        ("CAE", "stat"): {"test": 0.90},
        ("CAE", "knn"): {"test": 0.98},
        ("CAE", "linear"): {"test": 0.98},
    },
}

DATA_FOLDERS = {"mnist": "mnist"}
METRICS = ("accuracy", "precision_weighted", "recall_weighted")


def cae_variant(negatives: str = "all", local_branch: bool = False) -> str:
    """What sets a CAE apart from the default one: ``""``, ``"cluster-aware negatives"``, ``"local branch"`` or both."""
    parts = ([] if negatives == "all" else [f"{negatives.replace('_', '-')} negatives"])
    return ", ".join(parts + (["local branch"] if local_branch else []))


def cae_model_name(negatives: str = "all", local_branch: bool = False) -> str:
    """The CAE's row name in the tables: ``CAE``, or e.g. ``CAE, cluster-aware negatives`` for a variant."""
    variant = cae_variant(negatives, local_branch)
    return f"CAE, {variant}" if variant else "CAE"


def _train_cae(dataset: str, data_root: str, seed: int, run_dir: str, overrides: dict) -> str:
    config_files = [os.path.join(REPO_ROOT, "bundles", "cae", "configs", "train.json")]
    preset = os.path.join(REPO_ROOT, "configs", f"{dataset}.json")
    if os.path.isfile(preset):
        config_files.append(preset)
    model_dir = os.path.join(run_dir, "models")
    run_bundle(
        run_id="training",
        config_file=config_files,
        bundle_root=os.path.join(REPO_ROOT, "bundles", "cae"),
        dataset_dir=data_root,
        output_dir=os.path.join(run_dir, "train"),
        model_dir=model_dir,
        seed=seed,
        progress=False,
        **overrides,
    )
    return os.path.join(model_dir, "model.pt")


def _rows_from(results: dict, model: str, approaches: Sequence[str]) -> dict[tuple[str, str], dict]:
    splits = [s for s in results if not s.startswith("_")]
    return {(model, a): {s: results[s][a] for s in splits} for a in approaches}


def run_seed(dataset: str, data_root: str, seed: int, output_dir: str, args: argparse.Namespace) -> dict:
    """Train and evaluate the CAE and every baseline for one seed; returns ``{(model, approach): {split: metrics}}``."""
    run_dir = os.path.join(output_dir, f"seed_{seed}")
    overrides = {} if args.epochs is None else {"train#trainer#max_epochs": args.epochs,
                                                 "warmup_epochs": max(1, args.epochs // 2)}
    overrides.update(negatives=args.negatives, local_branch=args.local_branch)
    ckpt = _train_cae(dataset, data_root, seed, run_dir, overrides)
    datasets = {split: make_dataset(dataset, split, data_root) for split in ("train", "val", "test")}
    network = load_model(ContrastiveAutoEncoder(local_branch=args.local_branch), ckpt, args.device)
    set_determinism(seed)
    cae = evaluate_model(network, datasets, os.path.join(run_dir, "cae"), args.device, seed=seed,
                         figures=seed == args.first_seed, progress=False)
    name = cae_model_name(args.negatives, args.local_branch)
    rows = _rows_from(cae, name, ("stat", "knn", "linear"))
    rows[(name, "clusters (no labels)")] = {s: cae[s]["clustering"] for s in cae if not s.startswith("_")}
    if args.cae_only:
        return rows
    k = network.num_prototypes

    images = {split: ds.images for split, ds in datasets.items()}
    labels = {split: ds.labels.numpy() for split, ds in datasets.items()}
    eval_splits = ("val", "test")

    def score(features: dict[str, np.ndarray], elbow: ElbowResult, name: str, counts: Sequence[int]) -> None:
        for count in counts:
            result = evaluate_representation(
                features["train"], labels["train"], {s: (features[s], labels[s]) for s in eval_splits},
                kmeans_assigner(dataclasses.replace(elbow, k=count)), count, seed=seed,
            )
            label = name if len(counts) == 1 else f"{name}, k={count} ({'elbow' if count == elbow.k else 'as CAE'})"
            rows.update(_rows_from(result, label, ("stat", "knn", "linear")))

    pixels = [images[s].numpy() for s in ("train", *eval_splits)]
    pca = dict(zip(("train", *eval_splits), pca_features(*pixels, seed=seed)))
    pca_elbow = elbow_kmeans(pca["train"], args.k_values, seed=seed, normalize=False, progress=False)
    score(pca, pca_elbow, "PCA(32) pixels + KMeans", sorted({pca_elbow.k, k} & set(pca_elbow.models)))

    resnet = train_supervised_resnet18(images["train"], labels["train"], epochs=args.resnet_epochs, seed=seed,
                                       device=args.device, weights_path=args.resnet_weights, progress=False)
    rows[("ResNet-18 supervised", "-")] = {}
    for split in eval_splits:
        predictions, probabilities = resnet_predict(resnet, images[split], device=args.device)
        rows[("ResNet-18 supervised", "-")][split] = classification_metrics(labels[split], predictions, probabilities)
    features = {s: resnet_features(resnet, images[s], device=args.device) for s in ("train", *eval_splits)}
    resnet_elbow = elbow_kmeans(features["train"], args.k_values, seed=seed, progress=False)
    score(features, resnet_elbow, "ResNet-18 features + KMeans", [resnet_elbow.k])
    return rows


def aggregate(per_seed: list[dict]) -> dict[tuple[str, str], dict[str, dict[str, tuple[float, float]]]]:
    """Mean and standard deviation over seeds of every (model, approach, split, metric)."""
    values: dict = defaultdict(lambda: defaultdict(lambda: defaultdict(list)))
    for rows in per_seed:
        for key, by_split in rows.items():
            for split, metrics in by_split.items():
                for metric, value in metrics.items():
                    values[key][split][metric].append(value)
    return {
        key: {split: {m: (float(np.mean(v)), float(np.std(v))) for m, v in metrics.items()}
              for split, metrics in by_split.items()}
        for key, by_split in values.items()
    }


def markdown(dataset: str, summary: dict, seeds: int, minutes: float, variant: str = "") -> str:
    """The results table with the paper's accuracy beside ours; ``variant`` (:func:`cae_variant`) goes in the title."""
    rows = []
    paper = PAPER_TABLE.get(dataset, {})
    for (model, approach), by_split in summary.items():
        if approach.startswith("clusters"):
            continue
        reference = paper.get((model, approach), {})
        by_split = {split: {**metrics, "paper accuracy": reference[split]} if split in reference else metrics
                    for split, metrics in by_split.items()}
        rows.append((model, approach, by_split))
    for (model, approach), reference in paper.items():
        if (model, approach) not in summary:
            rows.append((f"{model} (paper only)", approach, {s: {"paper accuracy": v} for s, v in reference.items()}))
    table = results_markdown(rows, ("accuracy", "paper accuracy", "precision_weighted", "recall_weighted"))
    clusters = [(m, a, b) for (m, a), b in summary.items() if a.startswith("clusters")]
    header = (f"### {dataset}{f' ({variant})' if variant else ''}: mean ± std over {seeds} seed(s), {minutes:.1f} min wall\n\n"
              "Precision and recall are weighted by class support; macro averages and AUCs are in results.json.\n\n")
    cluster_table = results_markdown(clusters, ("nmi", "ari", "hungarian_accuracy")) if clusters else ""
    return header + table + ("\nLabel-free cluster quality of the CAE strata:\n\n" + cluster_table if clusters else "")


def reproduce(args: argparse.Namespace) -> dict:
    """Run every seed and write ``results.json`` and ``results.md``; returns the summary."""
    data_root = args.data_root or os.path.join(REPO_ROOT, "..", "shared", "data", DATA_FOLDERS.get(args.dataset,
                                                                                                 "medmnist"))
    suffix = ("" if args.negatives == "all" else f"-{args.negatives}") + ("-local" if args.local_branch else "")
    output_dir = args.output_dir or os.path.join(REPO_ROOT, "runs", "reproduce", args.dataset + suffix)
    os.makedirs(output_dir, exist_ok=True)
    start = time.time()
    per_seed = []
    for seed in range(args.first_seed, args.first_seed + args.seeds):
        logging.getLogger(__name__).info(f"{args.dataset}: seed {seed}")
        per_seed.append(run_seed(args.dataset, data_root, seed, output_dir, args))
    minutes = (time.time() - start) / 60
    summary = aggregate(per_seed)
    with open(os.path.join(output_dir, "results.json"), "w") as f:
        json.dump({"dataset": args.dataset, "negatives": args.negatives, "local_branch": args.local_branch,
                   "seeds": args.seeds, "minutes": minutes,
                   "per_seed": [{" | ".join(k): v for k, v in rows.items()} for rows in per_seed],
                   "summary": {" | ".join(k): v for k, v in summary.items()}}, f, indent=2)
    text = markdown(args.dataset, summary, args.seeds, minutes, cae_variant(args.negatives, args.local_branch))
    with open(os.path.join(output_dir, "results.md"), "w") as f:
        f.write(text)
    print(text)
    return summary


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dataset", default="pneumoniamnist", help="pneumoniamnist (or another MedMNIST flag), mnist")
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--first-seed", type=int, default=0)
    parser.add_argument("--data-root", default=None, help="folder with the dataset files (default: ../shared/data/...)")
    parser.add_argument("--output-dir", default=None)
    parser.add_argument("--epochs", type=int, default=None, help="CAE epochs (default: the bundle's)")
    parser.add_argument("--negatives", choices=NEGATIVES, default="all",
                        help="NT-Xent negatives of the CAE: all other images, or none from the anchor's pseudo-class")
    parser.add_argument("--local-branch", action="store_true",
                        help="train the CAE with the local pixel-level branch (the bundle's local_branch option)")
    parser.add_argument("--cae-only", action="store_true",
                        help="skip the PCA and ResNet-18 baselines (e.g. to compare CAE variants)")
    parser.add_argument("--resnet-epochs", type=int, default=5)
    parser.add_argument("--resnet-weights", default=None, help="local ResNet-18 weights for the transfer variant")
    parser.add_argument("--k-values", type=int, nargs="+", default=list(range(2, 11)))
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO)
    reproduce(args)


if __name__ == "__main__":
    main()
