from __future__ import annotations

import pytest

from monai_cae.reproduce import PAPER_TABLE, aggregate, markdown


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
