"""Criteria for the number of clusters, side by side with the elbow of the published pipeline."""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from sklearn.cluster import KMeans
from sklearn.decomposition import PCA
from tqdm.auto import tqdm

from .elbow import ElbowResult, elbow_kmeans
from .features import l2_normalize, validate_features, validate_k_values
from .gmm import fit_gaussian_mixture, pca_project
from .matching import hungarian_accuracy

__all__ = ["K_CRITERIA", "KSelection", "choose_k"]

# criterion -> what its curve holds and which end of it is best ("knee": the elbow's knee of a decreasing curve)
K_CRITERIA: dict[str, tuple[str, str]] = {
    "elbow": ("KMeans inertia", "knee"),
    "silhouette": ("silhouette of KMeans", "max"),
    "bic": ("BIC of a Gaussian mixture", "min"),
    "gap": ("gap statistic of KMeans", "first"),
    "stability": ("normalised KMeans instability", "min"),
}


@dataclass
class KSelection:
    """Outcome of :func:`choose_k`: one criterion's curve over ``k`` and the ``k`` it picks.

    Attributes:
        criterion: a key of :data:`K_CRITERIA`.
        k_values: the cluster counts tried, increasing.
        scores: the criterion at each count.
        k: the chosen number of clusters.
        errors: standard errors of ``scores`` where the criterion has them (the gap statistic's ``s_k``, the
            stability's standard error over splits), else ``None``.
    """

    criterion: str
    k_values: list[int]
    scores: list[float]
    k: int
    errors: list[float] | None = None

    def to_dict(self) -> dict:
        return {"criterion": self.criterion, "k": self.k, "k_values": self.k_values, "scores": self.scores,
                "errors": self.errors}

    def plot(self, path: str | os.PathLike) -> None:
        """The criterion against ``k``, with the chosen ``k`` marked."""
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        label, rule = K_CRITERIA[self.criterion]
        fig, ax = plt.subplots(figsize=(6, 4))
        ax.errorbar(self.k_values, self.scores, yerr=self.errors, fmt="o-", capsize=3)
        ax.axvline(self.k, color="tab:red", linestyle="--", label=f"chosen k = {self.k}")
        ax.set_xlabel("number of clusters k")
        ax.set_ylabel(label)
        ax.set_title(f"{self.criterion} ({rule}): k = {self.k}")
        ax.legend(loc="best")
        fig.tight_layout()
        fig.savefig(path, dpi=100)
        plt.close(fig)


def _gap_statistic(
    data: np.ndarray, sweep: ElbowResult, n_references: int, seed: int, progress: bool
) -> tuple[list[float], list[float], int]:
    """Gap curve, its standard errors and Tibshirani's choice, reusing the sweep's inertias as ``W_k``."""
    # references: uniform in the bounding box of the principal axes (Tibshirani et al. 2001, Sec. 3, option b)
    rotated = PCA(random_state=seed).fit(data)
    box = rotated.transform(data)
    low, high = box.min(axis=0), box.max(axis=0)
    rng = np.random.default_rng(seed)
    log_w = np.log(sweep.inertias)
    reference_log_w = np.empty((n_references, len(sweep.k_values)))
    for b in tqdm(range(n_references), desc="gap references", disable=not progress):
        reference = rotated.inverse_transform(rng.uniform(low, high, size=box.shape))
        for j, k in enumerate(sweep.k_values):
            n_init = sweep.models[k].n_init
            reference_log_w[b, j] = np.log(KMeans(k, n_init=n_init, random_state=seed).fit(reference).inertia_)
    gaps = reference_log_w.mean(axis=0) - log_w
    errors = reference_log_w.std(axis=0) * np.sqrt(1.0 + 1.0 / n_references)
    # the smallest k whose gap is within one standard error of the next count's
    within = np.flatnonzero(gaps[:-1] >= gaps[1:] - errors[1:])
    index = int(within[0]) if len(within) else int(np.argmax(gaps))
    return gaps.tolist(), errors.tolist(), sweep.k_values[index]


def _stability(
    data: np.ndarray, k_values: list[int], n_splits: int, seed: int, progress: bool
) -> tuple[list[float], list[float], int]:
    """Normalised instability curve over random halvings, its standard errors and the chosen ``k``."""
    rng = np.random.default_rng(seed)
    scores, errors = [], []
    for k in tqdm(k_values, desc="stability over k", disable=not progress):
        disagreement, chance = np.empty(n_splits), np.empty(n_splits)
        for split in range(n_splits):
            order = rng.permutation(len(data))
            first, second = data[order[: len(data) // 2]], data[order[len(data) // 2:]]
            transferred = KMeans(k, n_init=10, random_state=seed).fit(first).predict(second)
            own = KMeans(k, n_init=10, random_state=seed).fit(second).labels_
            disagreement[split] = 1.0 - hungarian_accuracy(own, transferred)
            # what two unrelated k-labelings disagree by: larger k disagree more by chance alone
            chance[split] = 1.0 - hungarian_accuracy(rng.integers(0, k, len(second)), rng.integers(0, k, len(second)))
        scores.append(float(disagreement.mean() / chance.mean()))
        errors.append(float(disagreement.std() / np.sqrt(n_splits) / chance.mean()))
    # merging well-separated clusters is stable too, so every k up to the true one can reach the minimum: take the
    # largest k within one standard error of it (Ben-Hur et al. 2002 likewise take the last stable k)
    best = int(np.argmin(scores))
    index = int(np.flatnonzero(np.array(scores) <= scores[best] + errors[best])[-1])
    return scores, errors, k_values[index]


def choose_k(
    features: np.ndarray,
    k_values: Sequence[int] = tuple(range(2, 11)),
    criterion: str = "silhouette",
    seed: int = 0,
    normalize: bool = True,
    progress: bool = False,
    sweep: ElbowResult | None = None,
    pca_components: int = 16,
    n_references: int = 10,
    n_splits: int = 10,
) -> KSelection:
    """Choose the number of clusters of the latent by one criterion, and return its whole curve.

    Criteria:
        - ``"elbow"``: the knee of the KMeans inertia curve, the published choice (:func:`elbow_kmeans`; Satopaa et
          al. 2011).
        - ``"silhouette"``: the ``k`` whose KMeans partition has the highest mean silhouette (Rousseeuw 1987,
          "Silhouettes: a graphical aid to the interpretation and validation of cluster analysis").
        - ``"bic"``: the ``k`` whose Gaussian mixture on the leading principal axes
          (:func:`~monai_cae.clustering.gmm.pca_project`), the ``"gmm"`` clusterer's model, has the lowest
          Bayesian information criterion (Schwarz 1978, "Estimating the dimension of a model"): a likelihood that
          is not bound to round, equal clusters, less a ``log N`` charge per parameter.
        - ``"gap"``: the gap statistic (Tibshirani, Walther and Hastie 2001, "Estimating the number of clusters in
          a data set via the gap statistic"): the smallest ``k`` with ``Gap(k) >= Gap(k') - s_k'`` for the next
          count ``k'``, ``log W_k`` being compared with ``n_references`` uniform reference sets.
        - ``"stability"``: split the rows at random into halves ``n_splits`` times, cluster both with KMeans, and
          count the rows of the second half on which its own clustering and the first half's (transferred by
          nearest centre) disagree under the best matching, divided by what random labelings disagree by (Lange,
          Roth, Braun and Buhmann 2004, "Stability-based validation of clustering solutions"); the largest ``k``
          within one standard error of the lowest instability is chosen.

    The elbow, silhouette and gap criteria all read the same KMeans sweep, which is fitted once here or passed in
    as ``sweep`` (an :func:`elbow_kmeans` result, e.g. the one the pipeline already computed).

    Cost on one core, 10,000 rows of 128-D (ten Gaussian clusters), ``k`` from 2 to 12: the sweep 7.5 s (the elbow
    then chose 9, every other criterion 10), BIC 2 s, stability 31 s (10 splits), gap 297 s (10 references: KMeans
    on uniform data converges slowly), so lower ``n_references`` on large latents.

    Args:
        features: ``(N, D)`` latent vectors.
        k_values: cluster counts to try, each in ``[2, N - 1]``, at least two of them.
        criterion: a key of :data:`K_CRITERIA`.
        seed: random state of every fit.
        normalize: L2-normalise rows first (must match ``sweep``'s normalisation when one is given).
        progress: show progress bars.
        sweep: an existing KMeans sweep over ``k_values`` on these features, to reuse.
        pca_components: principal axes kept for the BIC mixtures.
        n_references: reference sets of the gap statistic (each costs one KMeans per ``k``).
        n_splits: random halvings of the stability criterion (each costs two KMeans on N / 2 rows per ``k``).

    Returns:
        A :class:`KSelection`.

    Raises:
        ValueError: for an unknown criterion, bad ``k_values`` or features (as :func:`elbow_kmeans`), a ``sweep``
            over other counts or normalisation, or ``n_references`` or ``n_splits`` below 2.
    """
    if criterion not in K_CRITERIA:
        raise ValueError(f"Unknown criterion {criterion!r}; choose one of {sorted(K_CRITERIA)}.")
    if n_references < 2 or n_splits < 2:
        raise ValueError(f"n_references and n_splits must be at least 2 (for a standard error), "
                         f"got n_references={n_references}, n_splits={n_splits}.")
    features = validate_features(features)
    k_values = validate_k_values(k_values, len(features))
    data = l2_normalize(features) if normalize else features
    if criterion == "bic":
        _, projected = pca_project(data, pca_components, seed)
        scores = [float(fit_gaussian_mixture(projected, k, seed).bic(projected))
                  for k in tqdm(k_values, desc="GMM over k", disable=not progress)]
        return KSelection(criterion, k_values, scores, k_values[int(np.argmin(scores))])
    if criterion == "stability":
        scores, errors, k = _stability(data, k_values, n_splits, seed, progress)
        return KSelection(criterion, k_values, scores, k, errors)
    if sweep is None:
        sweep = elbow_kmeans(features, k_values, seed=seed, normalize=normalize, progress=progress)
    elif sweep.k_values != k_values or sweep.normalized != normalize:
        raise ValueError(f"sweep covers k={sweep.k_values} with normalize={sweep.normalized}, "
                         f"not k={k_values} with normalize={normalize}.")
    if criterion == "elbow":
        return KSelection(criterion, k_values, sweep.inertias, sweep.k)
    if criterion == "silhouette":
        return KSelection(criterion, k_values, sweep.silhouettes, k_values[int(np.argmax(sweep.silhouettes))])
    gaps, errors, k = _gap_statistic(data, sweep, n_references, seed, progress)
    return KSelection(criterion, k_values, gaps, k, errors)
