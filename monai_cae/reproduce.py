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
``--reuse-models`` scores a seed's existing ``models/model.pt`` instead of training it again.

Strata beyond the published KMeans + elbow: on the CAE's frozen training latent, every clusterer of ``--methods``
(:data:`~monai_cae.clustering.CLUSTERING_METHODS`) is fitted at ``k`` = the number of classes, and KMeans at the
``k`` of every criterion of ``--criteria`` (:data:`~monai_cae.clustering.K_CRITERIA`, searched over the preset's
``k_values``). Each is scored like the CAE's own strata, through cosine prototypes: stat, and the label-free NMI, ARI
and Hungarian accuracy, with the ``k`` used and the fit time. The baselines' KMeans is scored at its elbow's ``k``
and at the number of classes. The stat mapping grows with ``k`` (one cluster per image reaches 1.0), so compare
methods by the Hungarian accuracy, NMI and ARI at the number of classes.

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
from monai.bundle import ConfigParser
from monai.bundle import run as run_bundle
from monai.utils import set_determinism

from monai_cae.clustering import CLUSTERING_METHODS, K_CRITERIA, ElbowResult, choose_k, cluster_latent, elbow_kmeans
from monai_cae.data import make_dataset
from monai_cae.apps.bundle import bundle_dir
from monai_cae.engines import load_model
from monai_cae.evaluation import (
    classification_metrics,
    embed_splits,
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


def _config_files(dataset: str) -> list[str]:
    """The bundle's training config and the dataset's preset, as ``reproduce`` trains with."""
    config_files = [os.path.join(bundle_dir(), "configs", "train.json")]
    preset = os.path.join(bundle_dir(), "configs", f"{dataset}.json")
    return config_files + ([preset] if os.path.isfile(preset) else [])


def preset_k_values(dataset: str) -> list[int]:
    """The cluster counts the bundle searches for ``dataset`` (its ``k_values`` id, with the preset applied)."""
    parser = ConfigParser()
    parser.read_config(_config_files(dataset))
    return list(parser.get_parsed_content("k_values"))


def _train_cae(dataset: str, data_root: str, seed: int, run_dir: str, overrides: dict) -> str:
    model_dir = os.path.join(run_dir, "models")
    run_bundle(
        run_id="training",
        config_file=_config_files(dataset),
        bundle_root=bundle_dir(),
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


def _cluster_rows(results: dict, model: str, k: int, fit_seconds: float | None = None) -> dict[tuple[str, str], dict]:
    """The stat row and the label-free row (with the ``k`` used, and the fit time when known) of one clustering."""
    splits = [s for s in results if not s.startswith("_")]
    timing = {} if fit_seconds is None else {"fit_seconds": fit_seconds}
    return {**_rows_from(results, model, ("stat",)),
            (model, "clusters (no labels)"): {s: {**results[s]["clustering"], "k": k, **timing} for s in splits}}


def strata_rows(
    features: dict[str, tuple[np.ndarray, np.ndarray]], methods: Sequence[str], criteria: Sequence[str],
    k_values: Sequence[int], seed: int, figures_dir: str | None = None,
) -> dict[tuple[str, str], dict]:
    """Score every clusterer at the number of classes, and KMeans at every criterion's ``k``, on frozen features.

    Args:
        features: split name to ``(features, labels)``; ``"train"`` is clustered, the other splits are scored
            through the clusters' cosine prototypes.
        methods: keys of :data:`~monai_cae.clustering.CLUSTERING_METHODS`.
        criteria: keys of :data:`~monai_cae.clustering.K_CRITERIA`.
        k_values: the cluster counts the criteria choose from.
        seed: seed of the clusterers, the criteria and the evaluation.
        figures_dir: where to draw each criterion's curve (``k_<criterion>.png``), if given.

    Returns:
        ``{(model, approach): {split: metrics}}`` with a ``stat`` and a ``clusters (no labels)`` row per clustering.
    """
    train_features, train_labels = features["train"]
    eval_sets = {s: pair for s, pair in features.items() if s != "train"}
    num_classes = int(train_labels.max()) + 1
    rows: dict[tuple[str, str], dict] = {}
    logger = logging.getLogger(__name__)
    for method in methods:
        clustering = cluster_latent(train_features, method, num_classes, seed)
        results = evaluate_representation(train_features, train_labels, eval_sets, kmeans_assigner(clustering),
                                          clustering.k, seed=seed)
        rows.update(_cluster_rows(results, f"CAE latent + {method}, k = classes", clustering.k,
                                  clustering.fit_seconds))
        logger.info(f"{method} at k={num_classes}: fitted in {clustering.fit_seconds:.1f} s")
    start = time.perf_counter()
    sweep = elbow_kmeans(train_features, k_values, seed=seed, progress=False)
    sweep_seconds = time.perf_counter() - start
    for criterion in criteria:
        start = time.perf_counter()
        selection = choose_k(train_features, k_values, criterion, seed=seed, sweep=sweep)
        seconds = time.perf_counter() - start + sweep_seconds
        if figures_dir is not None:
            selection.plot(os.path.join(figures_dir, f"k_{criterion}.png"))
        results = evaluate_representation(train_features, train_labels, eval_sets,
                                          kmeans_assigner(dataclasses.replace(sweep, k=selection.k)), selection.k,
                                          seed=seed)
        rows.update(_cluster_rows(results, f"CAE latent + kmeans, k by {criterion}", selection.k, seconds))
        logger.info(f"{criterion} chose k={selection.k} in {seconds:.1f} s")
    return rows


def run_seed(dataset: str, data_root: str, seed: int, output_dir: str, args: argparse.Namespace) -> dict:
    """Train and evaluate the CAE and every baseline for one seed; returns ``{(model, approach): {split: metrics}}``."""
    run_dir = os.path.join(output_dir, f"seed_{seed}")
    overrides = {} if args.epochs is None else {"max_epochs": args.epochs,
                                                 "warmup_epochs": max(1, args.epochs // 2)}
    overrides.update(negatives=args.negatives, local_branch=args.local_branch)
    ckpt = os.path.join(run_dir, "models", "model.pt")
    if not (args.reuse_models and os.path.isfile(ckpt)):
        ckpt = _train_cae(dataset, data_root, seed, run_dir, overrides)
    datasets = {split: make_dataset(dataset, split, data_root) for split in ("train", "val", "test")}
    network = load_model(ContrastiveAutoEncoder(local_branch=args.local_branch), ckpt, args.device)
    set_determinism(seed)
    cae_dir = os.path.join(run_dir, "cae")
    cae = evaluate_model(network, datasets, cae_dir, args.device, seed=seed, figures=seed == args.first_seed,
                         progress=False)
    name = cae_model_name(args.negatives, args.local_branch)
    k = network.num_prototypes
    rows = _cluster_rows(cae, name, k)
    rows.update(_rows_from(cae, name, ("knn", "linear")))
    latents = {s: (f, y) for s, (f, y, _) in embed_splits(network, datasets, args.device, progress=False).items()}
    rows.update(strata_rows(latents, args.methods, args.criteria, args.k_values or preset_k_values(dataset), seed,
                            cae_dir if seed == args.first_seed else None))
    if args.cae_only:
        return rows

    images = {split: ds.images for split, ds in datasets.items()}
    labels = {split: ds.labels.numpy() for split, ds in datasets.items()}
    eval_splits = ("val", "test")

    num_classes = int(labels["train"].max()) + 1
    k_values = sorted(set(args.k_values or preset_k_values(dataset)) | {num_classes})

    def score(features: dict[str, np.ndarray], elbow: ElbowResult, name: str) -> None:
        for count in sorted({elbow.k, num_classes}):
            result = evaluate_representation(
                features["train"], labels["train"], {s: (features[s], labels[s]) for s in eval_splits},
                kmeans_assigner(dataclasses.replace(elbow, k=count)), count, seed=seed,
            )
            label = f"{name}, k by elbow" if count == elbow.k else f"{name}, k = classes"
            rows.update(_rows_from(result, label, ("knn", "linear")))
            rows.update(_cluster_rows(result, label, count))

    pixels = [images[s].numpy() for s in ("train", *eval_splits)]
    pca = dict(zip(("train", *eval_splits), pca_features(*pixels, seed=seed)))
    score(pca, elbow_kmeans(pca["train"], k_values, seed=seed, normalize=False, progress=False),
          "PCA(32) pixels + KMeans")

    resnet = train_supervised_resnet18(images["train"], labels["train"], epochs=args.resnet_epochs, seed=seed,
                                       device=args.device, weights_path=args.resnet_weights, progress=False)
    rows[("ResNet-18 supervised", "-")] = {}
    for split in eval_splits:
        predictions, probabilities = resnet_predict(resnet, images[split], device=args.device)
        rows[("ResNet-18 supervised", "-")][split] = classification_metrics(labels[split], predictions, probabilities)
    features = {s: resnet_features(resnet, images[s], device=args.device) for s in ("train", *eval_splits)}
    score(features, elbow_kmeans(features["train"], k_values, seed=seed, progress=False),
          "ResNet-18 features + KMeans")
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
    cluster_table = results_markdown(clusters, ("k", "hungarian_accuracy", "nmi", "ari", "fit_seconds"))
    return header + table + ("\nLabel-free cluster quality (Hungarian accuracy, NMI, ARI against the labels; the "
                             "number of clusters k; the clusterer's fit time in seconds):\n\n" + cluster_table
                             if clusters else "")


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
    parser.add_argument("--reuse-models", action="store_true",
                        help="score a seed's existing models/model.pt instead of training it again")
    parser.add_argument("--methods", nargs="+", choices=sorted(CLUSTERING_METHODS), default=list(CLUSTERING_METHODS),
                        help="clusterers fitted on the CAE latent at k = number of classes")
    parser.add_argument("--criteria", nargs="+", choices=sorted(K_CRITERIA), default=list(K_CRITERIA),
                        help="criteria choosing KMeans's k on the CAE latent")
    parser.add_argument("--k-values", type=int, nargs="+", default=None,
                        help="cluster counts to search (default: the bundle's k_values with the dataset's preset)")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO)
    reproduce(args)


if __name__ == "__main__":
    main()
