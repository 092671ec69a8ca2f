"""Classification and clustering metrics of the evaluation protocol."""

from __future__ import annotations

import numpy as np
from sklearn.metrics import (
    accuracy_score,
    adjusted_rand_score,
    normalized_mutual_info_score,
    precision_score,
    recall_score,
    roc_auc_score,
    silhouette_score,
)

from monai_cae.clustering import hungarian_accuracy

__all__ = ["classification_metrics", "clustering_metrics", "hungarian_accuracy", "permutation_nmi"]


def classification_metrics(labels: np.ndarray, predictions: np.ndarray, scores: np.ndarray | None = None) -> dict:
    """Accuracy, precision and recall (macro and weighted averages), and AUC where scores exist.

    Ferrante et al. 2022 report accuracy / precision / recall without naming the average; both are reported here.
    Weighted averages weight each class by its support, macro averages treat classes equally.

    Args:
        labels: ``(N,)`` true labels.
        predictions: ``(N,)`` predicted labels.
        scores: optional ``(N, C)`` class scores (probabilities or votes); gives ``auc`` (one-vs-rest macro for more
            than two classes, the positive-class score for two).

    Returns:
        A dictionary of floats.

    Raises:
        ValueError: when the arrays differ in length.
    """
    labels, predictions = np.asarray(labels).reshape(-1), np.asarray(predictions).reshape(-1)
    if len(labels) != len(predictions):
        raise ValueError(f"{len(labels)} labels but {len(predictions)} predictions.")
    result = {"accuracy": float(accuracy_score(labels, predictions))}
    for average in ("macro", "weighted"):
        result[f"precision_{average}"] = float(precision_score(labels, predictions, average=average, zero_division=0))
        result[f"recall_{average}"] = float(recall_score(labels, predictions, average=average, zero_division=0))
    if scores is not None:
        scores = np.asarray(scores, dtype=np.float64)
        classes = np.unique(labels)
        if len(classes) == 2 and scores.shape[1] >= 2:
            result["auc"] = float(roc_auc_score(labels, scores[:, 1] / np.maximum(scores.sum(1), 1e-12)))
        elif len(classes) > 2 and scores.shape[1] == len(classes):
            probabilities = scores / np.maximum(scores.sum(1, keepdims=True), 1e-12)
            result["auc"] = float(roc_auc_score(labels, probabilities, multi_class="ovr", labels=classes))
    return result


def clustering_metrics(
    labels: np.ndarray, clusters: np.ndarray, features: np.ndarray | None = None, seed: int = 0
) -> dict:
    """Label-free cluster quality against reference labels: NMI, ARI, Hungarian accuracy, and silhouette.

    Args:
        labels: ``(N,)`` reference labels.
        clusters: ``(N,)`` cluster indices.
        features: optional ``(N, D)`` features the clusters live in, for the silhouette (cosine distance, computed
            on at most 4000 samples).
        seed: silhouette subsample seed.

    Returns:
        A dictionary of floats.
    """
    result = {
        "nmi": float(normalized_mutual_info_score(labels, clusters)),
        "ari": float(adjusted_rand_score(labels, clusters)),
        "hungarian_accuracy": hungarian_accuracy(labels, clusters),
    }
    if features is not None and 1 < len(np.unique(clusters)) < len(clusters):
        sample = min(4000, len(clusters))
        result["silhouette"] = float(
            silhouette_score(features, clusters, metric="cosine", sample_size=sample, random_state=seed)
        )
    return result


def permutation_nmi(
    labels: np.ndarray, clusters: np.ndarray, permutations: int = 200, seed: int = 0
) -> dict[str, float]:
    """NMI of clusters against labels, compared with the NMI of the same clusters shuffled among the images.

    Small cohorts give a positive NMI by chance alone, more so with more clusters; shuffling the cluster labels keeps
    their sizes and breaks any link to the labels, so the share of shufflings that reach the observed NMI is a
    permutation p-value (with the usual +1 correction, never 0).

    Args:
        labels: ``(N,)`` labels of any type (for example view positions).
        clusters: ``(N,)`` cluster of each image.
        permutations: number of shufflings.
        seed: seed of the shufflings.

    Returns:
        ``nmi``, ``chance_mean`` and ``chance_p95`` (mean and 95th percentile over the shufflings) and ``p_value``.

    Raises:
        ValueError: when the arrays differ in length or ``permutations < 1``.
    """
    labels, clusters = np.asarray(labels).reshape(-1), np.asarray(clusters).reshape(-1)
    if len(labels) != len(clusters):
        raise ValueError(f"{len(labels)} labels but {len(clusters)} clusters.")
    if permutations < 1:
        raise ValueError(f"permutations must be at least 1, got {permutations}.")
    observed = float(normalized_mutual_info_score(labels, clusters))
    rng = np.random.default_rng(seed)
    chance = np.array([normalized_mutual_info_score(labels, rng.permutation(clusters)) for _ in range(permutations)])
    return {"nmi": observed, "chance_mean": float(chance.mean()), "chance_p95": float(np.percentile(chance, 95)),
            "p_value": float((1 + (chance >= observed).sum()) / (1 + permutations))}
