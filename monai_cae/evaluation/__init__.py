from __future__ import annotations

from monai_cae.clustering.knn import knn_votes

from .baselines import (
    kmeans_assigner,
    pca_features,
    prototype_assigner,
    resnet_features,
    resnet_predict,
    train_supervised_resnet18,
)
from .cluster_mapping import ClusterLabelMapping
from .linear_probe import LinearProbe
from .metrics import classification_metrics, clustering_metrics, hungarian_accuracy, permutation_nmi
from .protocol import evaluate_representation, labelled_subset, results_markdown, write_results
from .workflow import embed_splits, evaluate_model

__all__ = [
    "ClusterLabelMapping",
    "LinearProbe",
    "classification_metrics",
    "clustering_metrics",
    "evaluate_representation",
    "hungarian_accuracy",
    "permutation_nmi",
    "knn_votes",
    "labelled_subset",
    "results_markdown",
    "write_results",
    "kmeans_assigner",
    "pca_features",
    "prototype_assigner",
    "resnet_features",
    "resnet_predict",
    "train_supervised_resnet18",
    "embed_splits",
    "evaluate_model",
]
