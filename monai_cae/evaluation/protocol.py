"""The evaluation protocol of Ferrante et al. 2022: stat, kNN and linear, plus label-free cluster metrics."""

from __future__ import annotations

import json
import os
from collections.abc import Callable

import numpy as np
import torch

from .cluster_mapping import ClusterLabelMapping
from monai_cae.clustering.knn import knn_votes
from .linear_probe import LinearProbe
from .metrics import classification_metrics, clustering_metrics

__all__ = ["Assigner", "evaluate_representation", "labelled_subset", "results_markdown", "write_results"]

Assigner = Callable[[np.ndarray], tuple[np.ndarray, "np.ndarray | None"]]
"""Maps ``(N, D)`` features to hard clusters ``(N,)`` and, when available, a soft assignment ``(N, K)``."""


def labelled_subset(labels: np.ndarray, fraction: float, seed: int) -> np.ndarray:
    """Indices of a random, class-stratified fraction of the samples (at least one per class).

    Args:
        labels: ``(N,)`` labels.
        fraction: share of each class to keep, in (0, 1].
        seed: random seed.

    Returns:
        Sorted indices.

    Raises:
        ValueError: for a fraction outside (0, 1].
    """
    if not 0 < fraction <= 1:
        raise ValueError(f"fraction must be in (0, 1], got {fraction}.")
    rng = np.random.default_rng(seed)
    chosen = []
    for value in np.unique(labels):
        members = np.flatnonzero(labels == value)
        chosen.append(rng.choice(members, size=max(1, round(fraction * len(members))), replace=False))
    return np.sort(np.concatenate(chosen))


def evaluate_representation(
    train_features: np.ndarray,
    train_labels: np.ndarray,
    eval_sets: dict[str, tuple[np.ndarray, np.ndarray]],
    assign: Assigner,
    num_clusters: int,
    k_neighbors: int = 5,
    labelled_fraction: float = 0.2,
    linear_epochs: int = 200,
    linear_lr: float = 3e-4,
    seed: int = 0,
) -> dict:
    """Evaluate frozen features with the three published approaches and label-free cluster metrics.

    - **stat** (a): clusters of a labelled ``labelled_fraction`` of the training set are mapped to their majority
      label (:class:`ClusterLabelMapping`), and the map predicts each evaluation sample from its cluster.
    - **knn** (b): majority of the ``k_neighbors`` nearest training samples (cosine) over a memory bank of the
      whole training set.
    - **linear** (c): a linear layer trained on the labelled fraction (:class:`LinearProbe`).
    - **clustering**: NMI, ARI, Hungarian-matched accuracy and silhouette of the clusters against the labels,
      which use no label at all.

    Args:
        train_features: ``(N, D)`` training features.
        train_labels: ``(N,)`` training labels.
        eval_sets: name to ``(features, labels)`` of each split to score.
        assign: the clustering of the representation (prototype assignment or a KMeans model).
        num_clusters: number of clusters ``assign`` produces.
        k_neighbors: ``k`` of the kNN approach.
        labelled_fraction: share of training labels used by stat and linear.
        linear_epochs: epochs of the linear probe.
        linear_lr: Adam learning rate of the linear probe.
        seed: seed of the labelled subset and the probe.

    Returns:
        ``{split: {"stat": {...}, "knn": {...}, "linear": {...}, "clustering": {...}}}`` plus ``"_meta"``.
    """
    train_labels = np.asarray(train_labels).reshape(-1)
    subset = labelled_subset(train_labels, labelled_fraction, seed)
    train_clusters, _ = assign(train_features)
    mapping = ClusterLabelMapping(num_clusters).fit(train_clusters[subset], train_labels[subset])
    probe = LinearProbe(epochs=linear_epochs, lr=linear_lr, seed=seed).fit(train_features[subset], train_labels[subset])
    bank = torch.from_numpy(np.asarray(train_features, dtype=np.float32))
    bank_labels = torch.from_numpy(train_labels.astype(np.int64))
    num_classes = int(train_labels.max()) + 1
    results: dict = {
        "_meta": {
            "num_clusters": num_clusters,
            "k_neighbors": k_neighbors,
            "labelled_fraction": labelled_fraction,
            "labelled_samples": int(len(subset)),
            "cluster_to_label": mapping.mapping.tolist(),
        }
    }
    for name, (features, labels) in eval_sets.items():
        labels = np.asarray(labels).reshape(-1)
        clusters, soft = assign(features)
        votes = knn_votes(bank, bank_labels, torch.from_numpy(np.asarray(features, dtype=np.float32)), k_neighbors,
                          num_classes).numpy()
        results[name] = {
            "stat": classification_metrics(
                labels, mapping.predict(clusters), None if soft is None else mapping.scores(soft)
            ),
            "knn": classification_metrics(labels, votes.argmax(1), votes),
            "linear": classification_metrics(labels, probe.predict(features), probe.predict_proba(features)),
            "clustering": clustering_metrics(labels, clusters, features, seed),
        }
    return results


def results_markdown(rows: list[tuple[str, str, dict]], metrics: tuple[str, ...] = ("accuracy",)) -> str:
    """A Markdown table with one row per (model, approach) and one column per split and metric.

    Args:
        rows: ``(model, approach, {split: {metric: value or (mean, std)}})``.
        metrics: metrics to show per split.

    Returns:
        The table.
    """
    splits = sorted({split for _, _, by_split in rows for split in by_split})
    header = ["model", "approach"] + [f"{split} {metric}" for split in splits for metric in metrics]
    lines = ["| " + " | ".join(header) + " |", "|" + " --- |" * len(header)]
    for model, approach, by_split in rows:
        cells = []
        for split in splits:
            for metric in metrics:
                value = by_split.get(split, {}).get(metric)
                if value is None:
                    cells.append("")
                elif isinstance(value, (tuple, list)):
                    cells.append(f"{value[0]:.3f} ± {value[1]:.3f}")
                else:
                    cells.append(f"{value:.3f}")
        lines.append("| " + " | ".join([model, approach] + cells) + " |")
    return "\n".join(lines) + "\n"


def write_results(results: dict, output_dir: str, name: str = "results") -> dict[str, str]:
    """Write ``<name>.json`` and ``<name>.md`` (accuracy / weighted precision / weighted recall per approach).

    Args:
        results: output of :func:`evaluate_representation`.
        output_dir: destination folder.
        name: file stem.

    Returns:
        The written paths.
    """
    os.makedirs(output_dir, exist_ok=True)
    paths = {"json": os.path.join(output_dir, f"{name}.json"), "md": os.path.join(output_dir, f"{name}.md")}
    with open(paths["json"], "w") as f:
        json.dump(results, f, indent=2)
    rows = []
    for approach in ("stat", "knn", "linear"):
        by_split = {split: r[approach] for split, r in results.items() if not split.startswith("_")}
        rows.append(("model", approach, by_split))
    table = results_markdown(rows, ("accuracy", "precision_weighted", "recall_weighted", "precision_macro",
                                    "recall_macro"))
    with open(paths["md"], "w") as f:
        f.write(table)
    return paths
