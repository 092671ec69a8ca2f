from __future__ import annotations

from .agglomerative import agglomerative_pseudo_classes
from .choose_k import K_CRITERIA, KSelection, choose_k
from .elbow import ElbowResult, elbow_kmeans
from .features import cluster_directions, l2_normalize, validate_features, validate_k, validate_k_values
from .gmm import fit_gaussian_mixture, pca_project
from .knn import knn_votes
from .matching import hungarian_accuracy
from .methods import CLUSTERING_METHODS, cluster_latent
from .result import ClusteringResult, mean_direction_prototypes
from .scan import SCANHead, fit_scan_head, nearest_neighbours
from .spherical import SphericalKMeans

__all__ = [
    "agglomerative_pseudo_classes",
    "CLUSTERING_METHODS",
    "ClusteringResult",
    "ElbowResult",
    "KSelection",
    "SCANHead",
    "K_CRITERIA",
    "SphericalKMeans",
    "choose_k",
    "cluster_directions",
    "cluster_latent",
    "elbow_kmeans",
    "fit_gaussian_mixture",
    "fit_scan_head",
    "hungarian_accuracy",
    "knn_votes",
    "l2_normalize",
    "mean_direction_prototypes",
    "nearest_neighbours",
    "pca_project",
    "validate_features",
    "validate_k",
    "validate_k_values",
]
