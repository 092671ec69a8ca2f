"""Tests of the clusterers of the frozen latent and of the criteria for the number of clusters (issue 14).

Each clusterer is run on synthetic data with known clusters on which plain KMeans is known to fail, and must recover
the truth; each criterion must find the true number of well-separated blobs.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
from sklearn.datasets import make_blobs, make_circles, make_moons
from sklearn.metrics import adjusted_rand_score

from monai_cae.clustering import (
    CLUSTERING_METHODS,
    K_CRITERIA,
    SphericalKMeans,
    choose_k,
    cluster_latent,
    elbow_kmeans,
    fit_scan_head,
    l2_normalize,
    mean_direction_prototypes,
    nearest_neighbours,
)

Data = tuple[np.ndarray, np.ndarray]


def anisotropic_blobs() -> Data:
    """Three blobs sheared into parallel ellipses (scikit-learn's "KMeans assumptions" example)."""
    features, labels = make_blobs(n_samples=600, random_state=170)
    return features @ np.array([[0.6, -0.6], [-0.4, 0.8]]), labels


def unequal_variance_blobs() -> Data:
    """Three blobs of standard deviations 1, 2.5 and 0.5 (the same example's second case)."""
    return make_blobs(n_samples=600, cluster_std=[1.0, 2.5, 0.5], random_state=170)


def big_and_small_blobs() -> Data:
    """A broad blob of 1,000 points between two tight ones of 50: KMeans splits the broad one instead."""
    rng = np.random.default_rng(0)
    means, sizes, stds = np.array([[0.0, 0.0], [8.0, 0.0], [-8.0, 0.0]]), [1000, 50, 50], [2.0, 0.3, 0.3]
    features = np.vstack([m + s * rng.standard_normal((n, 2)) for m, n, s in zip(means, sizes, stds)])
    return features, np.repeat(np.arange(3), sizes)


def directional_clusters(seed: int = 0) -> Data:
    """Four directions in 8-D with small angular noise, at radii of scale 1, 5, 20 and 60 (each row times 0.25-4).

    The radial spread dwarfs the angular separation, so Euclidean KMeans groups rows by norm, not by direction.
    """
    rng = np.random.default_rng(seed)
    labels = np.repeat(np.arange(4), 80)
    directions = l2_normalize(np.eye(8)[:4] + 0.3)  # pairwise cosine about 0.4: distinct but not orthogonal
    scale = np.array([1.0, 5.0, 20.0, 60.0])[labels, None] * rng.uniform(0.25, 4.0, (len(labels), 1))
    features = scale * (directions[labels] + 0.05 * rng.standard_normal((len(labels), 8)))
    return features.astype(np.float32), labels


def ari_of(method: str, data: Data, k: int, normalize: bool) -> float:
    features, labels = data
    return adjusted_rand_score(labels, cluster_latent(features, method, k, seed=0, normalize=normalize).labels)


@pytest.mark.parametrize("make_data", [anisotropic_blobs, unequal_variance_blobs, big_and_small_blobs])
def test_gmm_recovers_blobs_that_kmeans_cuts(make_data) -> None:
    data = make_data()
    gmm, kmeans = ari_of("gmm", data, 3, normalize=False), ari_of("kmeans", data, 3, normalize=False)
    assert gmm > 0.9, f"GMM ARI {gmm:.3f}"
    assert kmeans < gmm - 0.1, f"KMeans ARI {kmeans:.3f} not clearly below GMM {gmm:.3f}"


@pytest.mark.parametrize("seed", range(4))
def test_gmm_finds_directions_on_the_sphere_from_one_em_start(seed: int) -> None:
    """Normalised rows, one EM start: whitening the principal axes (rejected in ``pca_project``) fails seed 3."""
    features, labels = directional_clusters(seed)
    result = cluster_latent(features, "gmm", 4, seed=0, n_init=1)
    assert adjusted_rand_score(labels, result.labels) > 0.9


def test_spectral_separates_concentric_circles() -> None:
    data = make_circles(n_samples=400, factor=0.5, noise=0.05, random_state=0)
    spectral, kmeans = ari_of("spectral", data, 2, normalize=False), ari_of("kmeans", data, 2, normalize=False)
    assert spectral > 0.9, f"spectral ARI {spectral:.3f}"
    assert kmeans < 0.1, f"KMeans ARI {kmeans:.3f}"


@pytest.mark.parametrize("make_data", [lambda: make_circles(n_samples=400, factor=0.5, noise=0.05, random_state=0),
                                       lambda: make_moons(n_samples=400, noise=0.05, random_state=0)],
                         ids=["circles", "moons"])
def test_umap_gmm_follows_non_convex_clusters(make_data) -> None:
    """Neighbourhoods, not distances to a centre: UMAP + GMM (N2D) separates rings and moons. (The SCAN head is no
    graph method on raw coordinates: its MLP sees each point alone and only learns from neighbours' agreement, and
    it scored ARI 0.00 on the rings and 0.48 on the moons.)"""
    features, labels = make_data()
    result = cluster_latent(features, "umap_gmm", 2, seed=0, normalize=False, metric="euclidean")
    kmeans = ari_of("kmeans", (features, labels), 2, normalize=False)
    ari = adjusted_rand_score(labels, result.labels)
    assert ari > 0.9, f"UMAP + GMM ARI {ari:.3f}"
    assert kmeans < 0.6, f"KMeans ARI {kmeans:.3f}"


def test_nearest_neighbours_match_a_brute_force_cosine_search() -> None:
    features = np.random.default_rng(0).standard_normal((300, 6)).astype(np.float32)
    found = nearest_neighbours(features, 5, chunk=64)  # several chunks
    similarity = l2_normalize(features) @ l2_normalize(features).T
    np.fill_diagonal(similarity, -np.inf)
    np.testing.assert_array_equal(np.sort(found, axis=1), np.sort(np.argsort(-similarity, axis=1)[:, :5], axis=1))
    with pytest.raises(ValueError, match="N=300, got 300"):
        nearest_neighbours(features, 300)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [({"entropy_weight": -1.0}, "-1.0"), ({"confidence": 1.0}, "1.0"), ({"heads": 0}, "0"),
     ({"self_label_epochs": -1}, "-1")],
)
def test_scan_head_rejects_bad_arguments(kwargs: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        fit_scan_head(FEATURES, 2, **kwargs)


def test_scan_self_labelling_keeps_every_cluster_on_balanced_directions() -> None:
    """The entropy term and the class-weighted self-labelling keep all clusters alive, and the kept head is the
    one of lowest SCAN loss."""
    features, truth = directional_clusters(seed=4)
    labels, head = fit_scan_head(l2_normalize(features), 4, seed=0, heads=3)
    assert adjusted_rand_score(truth, labels) > 0.9
    assert np.bincount(labels, minlength=4).min() > 0.5 * len(labels) / 4
    probabilities = head.predict_proba(l2_normalize(features))
    np.testing.assert_allclose(probabilities.sum(1), 1.0, rtol=1e-5)
    assert 0 <= head.best < 3


def test_scan_self_labelling_never_empties_a_cluster() -> None:
    """A tight majority and a diffuse minority: only majority rows pass the confidence threshold, and unguarded
    self-labelling lets the majority absorb every row (seen at k = 2 on PneumoniaMNIST). The head must keep both."""
    rng = np.random.default_rng(0)
    truth = np.repeat([0, 1], [900, 300])
    noise = np.where(truth[:, None] == 0, 0.05, 0.8)
    features = l2_normalize(np.eye(16)[:2] + 0.3)[truth] + noise * rng.standard_normal((len(truth), 16))
    labels, _ = fit_scan_head(l2_normalize(features), 2, seed=0, heads=3, epochs=5, confidence=0.9)
    assert np.bincount(labels, minlength=2).min() > 250
    assert adjusted_rand_score(truth, labels) > 0.9


def test_spherical_kmeans_clusters_directions_whatever_the_norm() -> None:
    data = directional_clusters()
    spherical, kmeans = ari_of("spherical_kmeans", data, 4, True), ari_of("kmeans", data, 4, normalize=False)
    assert spherical > 0.9, f"spherical KMeans ARI {spherical:.3f}"
    assert kmeans < 0.5, f"KMeans on raw features ARI {kmeans:.3f}"


def test_spherical_kmeans_is_a_fixed_point_of_cosine_assignment() -> None:
    features, _ = directional_clusters(seed=1)
    model = SphericalKMeans(4, n_init=3, seed=0).fit(features)
    unit = l2_normalize(features)
    np.testing.assert_allclose(np.linalg.norm(model.cluster_centers_, axis=1), 1.0, rtol=1e-5)
    np.testing.assert_array_equal(model.labels_, np.argmax(unit @ model.cluster_centers_.T, axis=1))
    assert model.objective_ == pytest.approx(np.max(unit @ model.cluster_centers_.T, axis=1).sum(), rel=1e-4)
    # the kept restart is the best of those tried: one restart alone cannot do better
    assert model.objective_ >= SphericalKMeans(4, n_init=1, seed=0).fit(features).objective_ - 1e-3


@pytest.mark.parametrize("method", sorted(CLUSTERING_METHODS))
def test_every_method_keeps_the_prototype_contract(method: str) -> None:
    """One unit prototype per stratum in the latent space; cosine assignment to them gives back the labels."""
    features, truth = directional_clusters(seed=2)
    result = cluster_latent(features, method, k=4, seed=0)
    again = cluster_latent(features, method, k=4, seed=0)
    assert result.method == method and result.normalized and result.fit_seconds > 0
    assert result.k == 4 and result.prototypes.shape == (4, features.shape[1])
    np.testing.assert_allclose(np.linalg.norm(result.prototypes, axis=1), 1.0, rtol=1e-5)
    assert set(np.unique(result.labels)) == set(range(4))
    assert adjusted_rand_score(truth, result.labels) > 0.9
    assert np.mean(result.predict(features) == result.labels) > 0.99
    similarities = result.similarities(features)
    assert similarities.shape == (len(features), 4) and np.all(np.abs(similarities) <= 1 + 1e-5)
    np.testing.assert_array_equal(result.labels, again.labels)  # the seed fixes the fit
    assert json.loads(json.dumps(result.to_dict()))["sizes"] == np.bincount(result.labels).tolist()


def test_prototypes_are_mean_directions_and_empty_clusters_are_dropped() -> None:
    data = np.array([[2.0, 0.0], [0.0, 3.0], [0.0, 1.0], [1.0, 1.0]], dtype=np.float32)
    prototypes, labels = mean_direction_prototypes(data, np.array([0, 4, 4, 7]))  # clusters 1-3 and 5-6 empty
    np.testing.assert_array_equal(labels, [0, 1, 1, 2])
    np.testing.assert_allclose(prototypes, [[1.0, 0.0], [0.0, 1.0], [2**-0.5, 2**-0.5]], rtol=1e-6)


K_VALUES = tuple(range(2, 11))


def separated_blobs(n_blobs: int) -> np.ndarray:
    return make_blobs(n_samples=80 * n_blobs, centers=n_blobs, n_features=5, cluster_std=0.5, center_box=(-20, 20),
                      random_state=1)[0]


@pytest.mark.parametrize(
    ("case", "true_k", "normalize"),
    [("3 blobs", 3, False), ("5 blobs", 5, False), ("4 directions", 4, True)],  # the last on the unit sphere
)
@pytest.mark.parametrize("criterion", sorted(K_CRITERIA))
def test_each_criterion_finds_the_number_of_separated_clusters(
    criterion: str, case: str, true_k: int, normalize: bool
) -> None:
    features = directional_clusters(seed=3)[0] if normalize else separated_blobs(true_k)
    selection = choose_k(features, K_VALUES, criterion, seed=0, normalize=normalize, n_references=5, n_splits=5)
    assert selection.k == true_k, f"{criterion} chose {selection.k} for {case}: {selection.scores}"
    assert selection.k_values == list(K_VALUES) and len(selection.scores) == len(K_VALUES)
    assert (selection.errors is not None) == (criterion in ("gap", "stability"))


def test_the_elbow_underestimates_many_blobs_where_the_other_criteria_do_not(tmp_path) -> None:
    """Eight separated blobs: the inertia curve bends early (cf. the elbow's k = 9 for 10 digits, issue 14)."""
    features, _ = make_blobs(n_samples=800, centers=8, n_features=5, cluster_std=0.5, center_box=(-20, 20),
                             random_state=0)
    k_values = tuple(range(2, 13))
    sweep = elbow_kmeans(features, k_values, normalize=False, progress=False)  # one sweep for three criteria
    chosen = {c: choose_k(features, k_values, c, normalize=False, sweep=sweep, n_references=5, n_splits=5)
              for c in sorted(K_CRITERIA)}
    assert chosen["elbow"].k < 8 and chosen["elbow"].k == sweep.k
    assert chosen["elbow"].scores == sweep.inertias and chosen["silhouette"].scores == sweep.silhouettes
    assert all(chosen[c].k == 8 for c in set(K_CRITERIA) - {"elbow"}), {c: s.k for c, s in chosen.items()}
    for criterion, selection in chosen.items():
        selection.plot(tmp_path / f"{criterion}.png")
        assert (tmp_path / f"{criterion}.png").stat().st_size > 0
        assert json.loads(json.dumps(selection.to_dict()))["k"] == selection.k


FEATURES = np.random.default_rng(0).standard_normal((20, 3)).astype(np.float32)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"method": "dbscan"}, "dbscan"),
        ({"k": 1}, "k=1"),
        ({"k": 20}, "k=20"),
        ({"k": 2.5}, "k=2.5"),
        ({"features": FEATURES[0]}, r"\(3,\)"),
        ({"features": FEATURES[None]}, r"\(1, 20, 3\)"),
    ],
)
def test_cluster_latent_rejects_bad_arguments(kwargs: dict, message: str) -> None:
    arguments = {"features": FEATURES, "method": "kmeans", "k": 3} | kwargs
    with pytest.raises(ValueError, match=message):
        cluster_latent(**arguments)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"criterion": "aic"}, "aic"),
        ({"k_values": (1, 2)}, r"\[1, 2\]"),
        ({"k_values": (3,)}, r"\[3\]"),
        ({"k_values": (2, 20)}, r"\[2, 20\]"),
        ({"features": FEATURES[0]}, r"\(3,\)"),
        ({"n_references": 1}, "n_references=1"),
        ({"n_splits": 1}, "n_splits=1"),
        ({"sweep": "other k"}, r"k=\[2, 3, 4\]"),
    ],
)
def test_choose_k_rejects_bad_arguments(kwargs: dict, message: str) -> None:
    if kwargs.get("sweep") == "other k":
        kwargs = {"sweep": elbow_kmeans(FEATURES, (2, 3, 4), progress=False), "criterion": "gap"}
    arguments = {"features": FEATURES, "k_values": (2, 3), "criterion": "silhouette"} | kwargs
    with pytest.raises(ValueError, match=message):
        choose_k(**arguments)
