"""Tests of elbow KMeans (prototype discovery) and kNN classification in the embedding space."""

from __future__ import annotations

import json
import math
import os
import pickle

import numpy as np
import pytest
import torch
from scipy.optimize import linear_sum_assignment

from monai_cae.clustering import elbow_kmeans, l2_normalize
from monai_cae.evaluation import knn_votes

K_VALUES = (2, 3, 4, 5, 6, 7, 8)


def gaussian_blobs(means: np.ndarray, per_blob: int, std: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    labels = np.repeat(np.arange(len(means)), per_blob)
    features = means[labels] + std * rng.standard_normal((len(labels), means.shape[1]))
    return features.astype(np.float32), labels


def match_clusters(truth: np.ndarray, predicted: np.ndarray, k: int) -> tuple[np.ndarray, float]:
    """Hungarian matching of predicted clusters to true labels: the permutation and the matched accuracy."""
    contingency = np.zeros((k, k), dtype=np.int64)
    np.add.at(contingency, (truth, predicted), 1)
    rows, cols = linear_sum_assignment(-contingency)
    mapping = np.empty(k, dtype=np.int64)
    mapping[cols] = rows  # predicted cluster -> true label
    return mapping, contingency[rows, cols].sum() / len(truth)


BLOB_MEANS_8D = 10.0 * np.eye(8)[:4] - 3.0  # four blobs, pairwise distance 14.1, std 1


def directional_means() -> np.ndarray:
    """Four well-separated directions in 8-D, at very different radii (normalisation must remove the radius)."""
    directions = np.zeros((4, 8))
    directions[0, 0] = directions[1, 1] = directions[2, 2] = directions[3, 3] = 1.0
    return directions * np.array([[1.0], [5.0], [20.0], [60.0]])


@pytest.mark.parametrize("normalize", [False, True])
def test_elbow_picks_the_number_of_blobs(normalize: bool) -> None:
    means = directional_means() if normalize else BLOB_MEANS_8D
    if normalize:
        rng = np.random.default_rng(3)
        labels = np.repeat(np.arange(4), 60)
        # each point: its blob direction (unit) plus small noise, times a random radius of its blob's scale
        unit = means / np.linalg.norm(means, axis=1, keepdims=True)
        noisy = unit[labels] + 0.05 * rng.standard_normal((len(labels), 8))
        features = (noisy * np.linalg.norm(means, axis=1)[labels, None] * rng.uniform(0.5, 2.0, (len(labels), 1)))
        features = features.astype(np.float32)
    else:
        features, labels = gaussian_blobs(means, 60, std=1.0, seed=0)
    result = elbow_kmeans(features, K_VALUES, seed=0, normalize=normalize, progress=False)
    assert result.k == 4
    assert result.normalized is normalize
    assert result.k_values == list(K_VALUES)
    assert len(result.inertias) == len(result.silhouettes) == len(K_VALUES)
    assert all(a > b for a, b in zip(result.inertias, result.inertias[1:]))  # decreasing inertia curve
    # the silhouette is highest at the true k on well-separated blobs
    assert int(np.argmax(result.silhouettes)) == K_VALUES.index(4)
    assert -1.0 <= min(result.silhouettes) and max(result.silhouettes) <= 1.0

    predicted = result.predict(features)
    mapping, accuracy = match_clusters(labels, predicted, 4)
    assert accuracy == 1.0
    # centroids are the blob means of the (normalised) data, in the matched order
    clustered = l2_normalize(features) if normalize else features
    expected = np.stack([clustered[labels == mapping[c]].mean(0) for c in range(4)])
    assert result.centroids.shape == (4, 8) and result.centroids.dtype == np.float32
    np.testing.assert_allclose(result.centroids, expected, atol=1e-4)
    if not normalize:
        # and close to the generating means (standard error of a 60-sample mean: 1 / sqrt(60) ~ 0.13 per axis)
        np.testing.assert_allclose(result.centroids, BLOB_MEANS_8D[mapping], atol=0.6)


def test_predict_normalises_like_the_fit() -> None:
    features, labels = gaussian_blobs(directional_means(), 50, std=0.02, seed=1)
    result = elbow_kmeans(features, (2, 3, 4, 5), normalize=True, progress=False)
    # scaling a row does not change its cluster when the fit was on normalised rows
    scaled = features * np.random.default_rng(0).uniform(0.1, 10.0, (len(features), 1)).astype(np.float32)
    np.testing.assert_array_equal(result.predict(scaled), result.predict(features))
    np.testing.assert_array_equal(result.predict(features), result.kmeans.labels_)
    np.testing.assert_allclose(np.linalg.norm(result.centroids, axis=1), 1.0, atol=0.01)


def test_silhouettes_match_sklearn() -> None:
    from sklearn.metrics import silhouette_score

    features, _ = gaussian_blobs(BLOB_MEANS_8D, 30, std=1.0, seed=2)
    result = elbow_kmeans(features, (2, 3, 5), normalize=False, silhouette_sample=None, progress=False)
    for k, silhouette in zip(result.k_values, result.silhouettes):
        model = result.models[k]
        assert model.n_clusters == k
        assert silhouette == pytest.approx(silhouette_score(features, model.labels_), abs=1e-6)
        assert result.inertias[result.k_values.index(k)] == pytest.approx(model.inertia_)


def test_save_writes_files_and_json_round_trips(tmp_path) -> None:
    features, labels = gaussian_blobs(BLOB_MEANS_8D, 40, std=1.0, seed=0)
    result = elbow_kmeans(features, (2, 3, 4, 5, 6), normalize=False, progress=False)
    out = os.path.join(tmp_path, "nested", "out")
    paths = result.save(out)
    assert set(os.listdir(out)) == {"elbow.json", "elbow.png", "kmeans.pkl", "prototypes.npy"}
    assert {os.path.basename(p) for p in paths.values()} == set(os.listdir(out))
    with open(os.path.join(out, "elbow.json")) as f:
        saved = json.load(f)
    assert saved == result.to_dict()
    assert saved["k"] == result.k == 4 and saved["k_values"] == [2, 3, 4, 5, 6]
    np.testing.assert_array_equal(np.load(os.path.join(out, "prototypes.npy")), result.centroids)
    with open(os.path.join(out, "kmeans.pkl"), "rb") as f:
        model = pickle.load(f)
    np.testing.assert_array_equal(model.predict(features), result.predict(features))
    with open(os.path.join(out, "elbow.png"), "rb") as f:
        assert f.read(8) == b"\x89PNG\r\n\x1a\n"
    prefixed = result.save(out, prefix="run1_")
    assert all(os.path.basename(p).startswith("run1_") and os.path.isfile(p) for p in prefixed.values())


@pytest.mark.parametrize("normalize", [False, True])
@pytest.mark.parametrize("fit_sample", [300, 1000])
def test_subsample_fit_agrees_with_the_full_fit(normalize: bool, fit_sample: int) -> None:
    means, std = (directional_means(), 0.02) if normalize else (BLOB_MEANS_8D, 0.5)
    features, labels = gaussian_blobs(means, 1500, std, seed=4)
    full = elbow_kmeans(features, K_VALUES, seed=0, normalize=normalize, fit_sample=None, progress=False)
    sampled = elbow_kmeans(features, K_VALUES, seed=0, normalize=normalize, fit_sample=fit_sample, progress=False)
    assert sampled.k == full.k == 4
    assert match_clusters(labels, sampled.predict(features), 4)[1] == 1.0
    clustered = l2_normalize(features) if normalize else features
    for k, inertia in zip(sampled.k_values, sampled.inertias):
        model = sampled.models[k]
        # fitted on the subsample only, but the inertia is that of every row: checked by hand
        assert model.n_features_in_ == 8 and len(model.labels_) == fit_sample
        distances = ((clustered[:, None, :] - model.cluster_centers_[None]) ** 2).sum(-1).min(1)
        assert inertia == pytest.approx(float(distances.sum()), rel=1e-4)
        # a centroid fitted on a sample is never better than the full fit on all rows, and close to it
        assert inertia >= full.inertias[full.k_values.index(k)] * (1 - 1e-4)
    assert sampled.inertias[K_VALUES.index(4)] == pytest.approx(full.inertias[K_VALUES.index(4)], rel=0.02)


def test_subsample_fit_is_reproducible_and_checks_its_size() -> None:
    features, _ = gaussian_blobs(BLOB_MEANS_8D, 500, 1.0, seed=5)
    first, second = (elbow_kmeans(features, (2, 3, 4), seed=7, fit_sample=200, progress=False) for _ in range(2))
    np.testing.assert_array_equal(first.centroids, second.centroids)
    with pytest.raises(ValueError, match="fit_sample"):
        elbow_kmeans(features, (2, 3, 4), fit_sample=4, progress=False)


@pytest.mark.parametrize(
    "features,k_values",
    [
        (np.zeros(20, np.float32), (2, 3)),  # 1-D
        (np.zeros((2, 5, 3), np.float32), (2, 3)),  # 3-D
        (np.random.default_rng(0).normal(size=(20, 3)), (3,)),  # one k
        (np.random.default_rng(0).normal(size=(20, 3)), ()),  # no k
        (np.random.default_rng(0).normal(size=(20, 3)), (1, 3)),  # k below 2
        (np.random.default_rng(0).normal(size=(20, 3)), (2, 20)),  # k == N
        (np.random.default_rng(0).normal(size=(20, 3)), (2, 25)),  # k > N
    ],
)
def test_elbow_invalid_inputs(features: np.ndarray, k_values: tuple) -> None:
    with pytest.raises(ValueError):
        elbow_kmeans(features, k_values, progress=False)


def test_l2_normalize_zero_rows() -> None:
    x = np.array([[3.0, 4.0], [0.0, 0.0]], np.float32)
    np.testing.assert_allclose(l2_normalize(x), [[0.6, 0.8], [0.0, 0.0]])


# ---------------------------------------------------------------------------------------------------------------
# kNN


def reference_knn(bank: np.ndarray, bank_labels: np.ndarray, queries: np.ndarray, k: int, num_classes: int) -> np.ndarray:
    """Brute force: cosine similarity, stable argsort (descending), vote counts of the k nearest labels."""
    b = bank / np.linalg.norm(bank, axis=1, keepdims=True)
    q = queries / np.linalg.norm(queries, axis=1, keepdims=True)
    similarity = q.astype(np.float64) @ b.astype(np.float64).T
    order = np.argsort(-similarity, axis=1, kind="stable")[:, :k]
    votes = np.zeros((len(queries), num_classes), dtype=np.int64)
    for i, neighbours in enumerate(order):
        for label in bank_labels[neighbours]:
            votes[i, label] += 1
    return votes


def mode_lowest(labels: np.ndarray) -> int:
    values, counts = np.unique(labels, return_counts=True)
    return int(values[counts == counts.max()].min())


@pytest.mark.parametrize("k", [1, 3, 5, 10, 60])
@pytest.mark.parametrize("num_classes", [2, 4])
def test_knn_votes_match_brute_force(k: int, num_classes: int) -> None:
    rng = np.random.default_rng(k * 10 + num_classes)
    bank = rng.standard_normal((60, 6)).astype(np.float32)
    labels = rng.integers(0, num_classes, 60)
    labels[:num_classes] = np.arange(num_classes)  # every class present
    queries = rng.standard_normal((25, 6)).astype(np.float32)
    votes = knn_votes(torch.from_numpy(bank), torch.from_numpy(labels), torch.from_numpy(queries), k=k)
    expected = reference_knn(bank, labels, queries, k, num_classes)
    assert votes.shape == (25, num_classes)
    np.testing.assert_array_equal(votes.numpy(), expected)
    assert (votes.sum(1) == k).all()
    # the prediction is the mode of the k nearest labels, ties to the lowest class
    b = bank / np.linalg.norm(bank, axis=1, keepdims=True)
    q = queries / np.linalg.norm(queries, axis=1, keepdims=True)
    nearest = np.argsort(-(q @ b.T), axis=1, kind="stable")[:, :k]
    modes = [mode_lowest(labels[row]) for row in nearest]
    np.testing.assert_array_equal(votes.argmax(1).numpy(), modes)


def test_knn_is_cosine_not_euclidean() -> None:
    # the query is nearer to bank[0] in Euclidean distance but points the same way as bank[1]
    bank = torch.tensor([[1.0, 0.2], [10.0, 0.0]])
    query = torch.tensor([[2.0, 0.0]])
    votes = knn_votes(bank, torch.tensor([0, 1]), query, k=1)
    assert votes.tolist() == [[0, 1]]


def test_knn_num_classes_pads_votes() -> None:
    bank = torch.eye(3)
    votes = knn_votes(bank, torch.tensor([0, 1, 1]), torch.eye(3), k=1, num_classes=5)
    assert votes.tolist() == [[1, 0, 0, 0, 0], [0, 1, 0, 0, 0], [0, 1, 0, 0, 0]]


def test_knn_separated_clusters_are_perfect() -> None:
    rng = np.random.default_rng(0)
    directions = np.eye(16)[:4] * 5.0
    labels = np.repeat(np.arange(4), 50)
    bank = directions[labels] + 0.3 * rng.standard_normal((200, 16))
    query_labels = np.repeat(np.arange(4), 30)
    queries = directions[query_labels] + 0.3 * rng.standard_normal((120, 16))
    votes = knn_votes(torch.from_numpy(bank), torch.from_numpy(labels), torch.from_numpy(queries), k=5)
    assert (votes.argmax(1).numpy() == query_labels).mean() == 1.0
    assert (votes.max(1).values == 5).all()  # unanimous


def test_knn_shuffled_labels_near_chance() -> None:
    rng = np.random.default_rng(1)
    n, classes = 2000, 2
    bank = rng.standard_normal((n, 8))
    queries = rng.standard_normal((n, 8))
    bank_labels = rng.integers(0, classes, n)
    query_labels = rng.integers(0, classes, n)
    votes = knn_votes(torch.from_numpy(bank), torch.from_numpy(bank_labels), torch.from_numpy(queries), k=5)
    accuracy = (votes.argmax(1).numpy() == query_labels).mean()
    # independent labels: accuracy ~ Binomial(n, 1/2) / n, sd = 0.011; allow 5 sd
    assert abs(accuracy - 0.5) < 5 * math.sqrt(0.25 / n)


@pytest.mark.parametrize("chunk_size", [1, 7, 64, 10_000])
def test_knn_chunking_does_not_change_votes(chunk_size: int) -> None:
    gen = torch.Generator().manual_seed(0)
    bank, queries = torch.randn(80, 5, generator=gen), torch.randn(64, 5, generator=gen)
    labels = torch.randint(0, 3, (80,), generator=gen)
    full = knn_votes(bank, labels, queries, k=4, num_classes=3, chunk_size=4096)
    assert torch.equal(knn_votes(bank, labels, queries, k=4, num_classes=3, chunk_size=chunk_size), full)


def test_knn_empty_queries() -> None:
    votes = knn_votes(torch.randn(5, 3), torch.tensor([0, 1, 2, 0, 1]), torch.zeros(0, 3), k=2)
    assert votes.shape == (0, 3)


@pytest.mark.parametrize(
    "bank_shape,labels_shape,query_shape,k",
    [
        ((10, 4), (10,), (3, 5), 1),  # feature size mismatch
        ((10,), (10,), (3,), 1),  # 1-D
        ((10, 4), (9,), (3, 4), 1),  # label count
        ((10, 4), (10, 1), (3, 4), 1),  # label shape
        ((10, 4), (10,), (3, 4), 0),  # k too small
        ((10, 4), (10,), (3, 4), 11),  # k larger than the bank
    ],
)
def test_knn_bad_inputs(bank_shape: tuple, labels_shape: tuple, query_shape: tuple, k: int) -> None:
    with pytest.raises(ValueError):
        knn_votes(torch.randn(bank_shape), torch.zeros(labels_shape, dtype=torch.long), torch.randn(query_shape), k=k)
