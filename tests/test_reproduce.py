from __future__ import annotations

import os

import numpy as np
import pytest

from monai_cae.reproduce import PAPER_TABLE, aggregate, markdown, preset_k_values, strata_rows


def three_directions(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Three well-separated directions in 6-D, each row at a random norm (the latent's norm carries no stratum)."""
    rng = np.random.default_rng(seed)
    labels = np.repeat(np.arange(3), n // 3)
    features = np.eye(6)[labels] + 0.05 * rng.standard_normal((len(labels), 6))
    return (features * rng.uniform(0.5, 3.0, (len(labels), 1))).astype(np.float32), labels


@pytest.mark.parametrize("methods", [["kmeans", "spherical_kmeans"], ["gmm"]])
def test_strata_rows_score_every_clusterer_and_criterion(tmp_path, methods: list[str]) -> None:
    features = {"train": three_directions(240, 0), "test": three_directions(120, 1)}
    rows = strata_rows(features, methods, ["elbow", "silhouette"], range(2, 7), seed=0, figures_dir=str(tmp_path))
    for method in methods:
        clusters = rows[(f"CAE latent + {method}, k = classes", "clusters (no labels)")]["test"]
        assert clusters["k"] == 3 and clusters["hungarian_accuracy"] == 1.0 and clusters["fit_seconds"] > 0
        assert rows[(f"CAE latent + {method}, k = classes", "stat")]["test"]["accuracy"] == 1.0
    silhouette = rows[("CAE latent + kmeans, k by silhouette", "clusters (no labels)")]["test"]
    assert silhouette["k"] == 3 and silhouette["ari"] == pytest.approx(1.0)
    assert ("CAE latent + kmeans, k by elbow", "stat") in rows
    assert len(rows) == 2 * (len(methods) + 2)
    assert sorted(os.listdir(tmp_path)) == ["k_elbow.png", "k_silhouette.png"]


def test_preset_k_values_apply_the_dataset_preset() -> None:
    assert preset_k_values("mnist") == list(range(5, 16))  # bundles/cae/configs/mnist.json: ten digits lie inside the search
    assert preset_k_values("pneumoniamnist") == list(range(2, 11))  # the bundle's own


def test_aggregate_means_and_spreads_over_seeds() -> None:
    per_seed = [
        {("CAE", "knn"): {"test": {"accuracy": 0.8}}, ("PCA", "stat"): {"test": {"accuracy": 0.5}}},
        {("CAE", "knn"): {"test": {"accuracy": 0.9}}, ("PCA", "stat"): {"test": {"accuracy": 0.5}}},
    ]
    summary = aggregate(per_seed)
    mean, std = summary[("CAE", "knn")]["test"]["accuracy"]
    assert mean == pytest.approx(0.85) and std == pytest.approx(0.05)
    assert summary[("PCA", "stat")]["test"]["accuracy"] == (0.5, 0.0)


def test_markdown_puts_the_paper_beside_ours() -> None:
    summary = aggregate([{("CAE", "knn"): {"test": {"accuracy": 0.9, "precision_weighted": 0.9,
                                                    "recall_weighted": 0.9}}}])
    table = markdown("pneumoniamnist", summary, seeds=1, minutes=2.0)
    row = next(line for line in table.splitlines() if line.startswith("| CAE | knn |"))
    assert "0.900 ± 0.000" in row and f"{PAPER_TABLE['pneumoniamnist'][('CAE', 'knn')]['test']:.3f}" in row
    # published rows we did not run still appear, marked as the paper's
    assert "| CAE (paper only) | stat |" in table
    assert "1 seed(s), 2.0 min" in table


def test_markdown_tables_the_clusters_with_their_k_and_fit_time() -> None:
    clusters = {"nmi": 0.5, "ari": 0.4, "hungarian_accuracy": 0.6, "k": 10, "fit_seconds": 2.5}
    summary = aggregate([{("CAE latent + gmm, k = classes", "clusters (no labels)"): {"test": clusters}}])
    row = next(line for line in markdown("mnist", summary, seeds=1, minutes=1.0).splitlines()
               if line.startswith("| CAE latent + gmm"))
    assert row.split(" | ")[2:] == ["10.000 ± 0.000", "0.600 ± 0.000", "0.500 ± 0.000", "0.400 ± 0.000",
                                    "2.500 ± 0.000 |"]
