from __future__ import annotations

import json

import numpy as np
import pytest
from sklearn.metrics import accuracy_score

from monai_cae.evaluation import (
    ClusterLabelMapping,
    LinearProbe,
    classification_metrics,
    clustering_metrics,
    evaluate_representation,
    hungarian_accuracy,
    labelled_subset,
    write_results,
)


def separated_blobs(n_per_class: int, num_classes: int, dim: int = 8, seed: int = 0, spread: float = 0.05):
    rng = np.random.default_rng(seed)
    directions = np.eye(dim)[:num_classes] * 5
    features = np.concatenate([d + spread * rng.standard_normal((n_per_class, dim)) for d in directions])
    labels = np.repeat(np.arange(num_classes), n_per_class)
    return features.astype(np.float32), labels


def test_mapping_hand_computed() -> None:
    clusters = np.array([0, 0, 0, 1, 1, 2, 2, 2, 2])
    labels = np.array([1, 1, 0, 0, 0, 1, 0, 1, 1])
    mapping = ClusterLabelMapping(4).fit(clusters, labels)
    # cluster 0: two 1s one 0 -> 1; cluster 1: all 0 -> 0; cluster 2: three 1s -> 1; cluster 3 empty -> majority 1
    assert mapping.mapping.tolist() == [1, 0, 1, 1]
    assert mapping.predict(np.array([3, 1, 0])).tolist() == [1, 0, 1]
    soft = np.array([[0.5, 0.5, 0.0, 0.0]])
    np.testing.assert_allclose(mapping.scores(soft), [[0.5, 0.5]])


def test_mapping_ties_go_to_the_lowest_label_and_bad_input_raises() -> None:
    assert ClusterLabelMapping(1).fit(np.array([0, 0]), np.array([1, 0])).mapping.tolist() == [0]
    with pytest.raises(ValueError):
        ClusterLabelMapping(2).fit(np.array([0, 2]), np.array([0, 1]))
    with pytest.raises(ValueError):
        ClusterLabelMapping(0)


@pytest.mark.parametrize("num_classes", [2, 5])
def test_perfectly_separated_clusters_score_one_everywhere(num_classes: int) -> None:
    features, labels = separated_blobs(40, num_classes)
    test_features, test_labels = separated_blobs(20, num_classes, seed=1)

    def assign(f: np.ndarray):
        clusters = np.argmax(f, axis=1)
        return clusters, np.eye(num_classes)[clusters]

    results = evaluate_representation(
        features, labels, {"test": (test_features, test_labels)}, assign, num_classes, linear_epochs=100, linear_lr=1e-2
    )
    for approach in ("stat", "knn", "linear"):
        assert results["test"][approach]["accuracy"] == 1.0, approach
        assert results["test"][approach]["auc"] == pytest.approx(1.0)
    assert results["test"]["clustering"]["nmi"] == pytest.approx(1.0)
    assert results["test"]["clustering"]["ari"] == pytest.approx(1.0)
    assert results["test"]["clustering"]["hungarian_accuracy"] == 1.0


def test_shuffled_labels_give_chance() -> None:
    features, labels = separated_blobs(150, 2)
    rng = np.random.default_rng(3)
    shuffled = rng.permutation(labels)
    test_features, test_labels = separated_blobs(150, 2, seed=5)
    test_labels = rng.permutation(test_labels)

    def assign(f: np.ndarray):
        return np.argmax(f, axis=1), None

    results = evaluate_representation(
        features, shuffled, {"test": (test_features, test_labels)}, assign, 2, linear_epochs=30
    )
    for approach in ("stat", "knn", "linear"):
        # 300 balanced samples: chance is 0.5 with a standard deviation of about 0.03
        assert abs(results["test"][approach]["accuracy"] - 0.5) < 0.12, approach
    assert results["test"]["clustering"]["nmi"] < 0.05


def test_classification_metrics_against_sklearn_and_by_hand() -> None:
    labels = np.array([0, 0, 0, 1, 1, 1, 1, 1])
    predictions = np.array([0, 1, 0, 1, 1, 1, 0, 1])
    result = classification_metrics(labels, predictions)
    assert result["accuracy"] == accuracy_score(labels, predictions) == 0.75
    # class 0: precision 2/3, recall 2/3; class 1: precision 4/5, recall 4/5
    assert result["precision_macro"] == pytest.approx((2 / 3 + 4 / 5) / 2)
    assert result["recall_weighted"] == pytest.approx((3 * 2 / 3 + 5 * 4 / 5) / 8)
    scores = np.stack([1 - predictions, predictions], axis=1).astype(float)
    assert 0.5 < classification_metrics(labels, predictions, scores)["auc"] <= 1.0
    with pytest.raises(ValueError):
        classification_metrics(labels, predictions[:3])


def test_hungarian_accuracy_by_hand() -> None:
    labels = np.array([0, 0, 1, 1, 2, 2])
    assert hungarian_accuracy(labels, np.array([2, 2, 0, 0, 1, 1])) == 1.0
    # clusters 0 and 1 can only be matched to one label each: 4 of 6 right
    assert hungarian_accuracy(labels, np.array([0, 0, 0, 0, 1, 1])) == pytest.approx(4 / 6)
    assert clustering_metrics(labels, np.array([2, 2, 0, 0, 1, 1]))["nmi"] == pytest.approx(1.0)


def test_linear_probe_learns_a_linear_rule_and_needs_fit() -> None:
    rng = np.random.default_rng(0)
    features = rng.standard_normal((400, 5)).astype(np.float32) * 100  # the probe standardises
    labels = (features[:, 0] + 0.5 * features[:, 1] > 0).astype(int)
    probe = LinearProbe(epochs=50, lr=1e-2).fit(features[:300], labels[:300])
    assert (probe.predict(features[300:]) == labels[300:]).mean() > 0.9
    np.testing.assert_allclose(probe.predict_proba(features[:3]).sum(1), 1.0, rtol=1e-5)
    with pytest.raises(RuntimeError):
        LinearProbe().predict(features)


@pytest.mark.parametrize("fraction", [0.2, 0.5, 1.0])
def test_labelled_subset_is_stratified(fraction: float) -> None:
    labels = np.array([0] * 100 + [1] * 300)
    subset = labelled_subset(labels, fraction, seed=0)
    assert np.bincount(labels[subset]).tolist() == [round(100 * fraction), round(300 * fraction)]
    assert len(set(subset.tolist())) == len(subset)
    with pytest.raises(ValueError):
        labelled_subset(labels, 0.0, 0)


def test_write_results(tmp_path) -> None:
    features, labels = separated_blobs(20, 2)

    def assign(f: np.ndarray):
        return np.argmax(f, axis=1), None

    results = evaluate_representation(features, labels, {"val": (features, labels)}, assign, 2, linear_epochs=5)
    paths = write_results(results, str(tmp_path))
    assert json.load(open(paths["json"]))["val"]["knn"]["accuracy"] == 1.0
    table = open(paths["md"]).read()
    assert "| model | knn |" in table and "1.000" in table
