"""KMeans over a range of cluster counts, with the number of clusters chosen by the elbow method."""

from __future__ import annotations

import json
import os
import pickle
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
from kneed import KneeLocator
from sklearn.cluster import KMeans
from sklearn.metrics import pairwise_distances_argmin_min, silhouette_score
from tqdm.auto import tqdm

from .features import l2_normalize, validate_features, validate_k_values

__all__ = ["ElbowResult", "elbow_kmeans", "l2_normalize"]


@dataclass
class ElbowResult:
    """Outcome of :func:`elbow_kmeans`.

    Attributes:
        k_values: the cluster counts tried.
        inertias: KMeans inertia (within-cluster sum of squares) for each count.
        silhouettes: silhouette score for each count.
        k: the chosen number of clusters.
        knee_found: whether ``kneed`` found a knee; when not, ``k`` is the count with the best silhouette.
        normalized: whether the features were L2-normalised before clustering.
        models: the fitted KMeans model for each count.
    """

    k_values: list[int]
    inertias: list[float]
    silhouettes: list[float]
    k: int
    knee_found: bool
    normalized: bool
    models: dict[int, KMeans] = field(repr=False)

    @property
    def kmeans(self) -> KMeans:
        """The KMeans model of the chosen ``k``."""
        return self.models[self.k]

    @property
    def centroids(self) -> np.ndarray:
        """``(k, D)`` centroids of the chosen model: the cluster prototypes."""
        return self.kmeans.cluster_centers_.astype(np.float32)

    def predict(self, features: np.ndarray) -> np.ndarray:
        """Cluster index of each row, with the same normalisation as the fit."""
        features = np.asarray(features, dtype=np.float32)
        return self.kmeans.predict(l2_normalize(features) if self.normalized else features)

    def to_dict(self) -> dict:
        return {
            "k": self.k,
            "knee_found": self.knee_found,
            "normalized": self.normalized,
            "k_values": self.k_values,
            "inertias": self.inertias,
            "silhouettes": self.silhouettes,
        }

    def save(self, output_dir: str | os.PathLike, prefix: str = "") -> dict[str, str]:
        """Write ``elbow.json``, ``elbow.png``, ``kmeans.pkl`` and ``prototypes.npy`` into ``output_dir``.

        Args:
            output_dir: destination folder, created when missing.
            prefix: optional file name prefix.

        Returns:
            The written paths by kind.
        """
        os.makedirs(output_dir, exist_ok=True)
        paths = {
            "json": os.path.join(output_dir, f"{prefix}elbow.json"),
            "png": os.path.join(output_dir, f"{prefix}elbow.png"),
            "kmeans": os.path.join(output_dir, f"{prefix}kmeans.pkl"),
            "prototypes": os.path.join(output_dir, f"{prefix}prototypes.npy"),
        }
        with open(paths["json"], "w") as f:
            json.dump(self.to_dict(), f, indent=2)
        with open(paths["kmeans"], "wb") as f:
            pickle.dump(self.kmeans, f)
        np.save(paths["prototypes"], self.centroids)
        self.plot(paths["png"])
        return paths

    def plot(self, path: str | os.PathLike) -> None:
        """Inertia and silhouette against ``k``, with the chosen ``k`` marked."""
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        fig, ax = plt.subplots(figsize=(6, 4))
        ax.plot(self.k_values, self.inertias, "o-", color="tab:blue", label="inertia")
        ax.set_xlabel("number of clusters k")
        ax.set_ylabel("inertia", color="tab:blue")
        ax.axvline(self.k, color="tab:red", linestyle="--", label=f"chosen k = {self.k}")
        twin = ax.twinx()
        twin.plot(self.k_values, self.silhouettes, "s-", color="tab:green", label="silhouette")
        twin.set_ylabel("silhouette", color="tab:green")
        how = "knee of the inertia curve" if self.knee_found else "best silhouette (no knee found)"
        ax.set_title(f"Elbow method: k = {self.k} ({how})")
        lines = ax.get_legend_handles_labels()[0] + twin.get_legend_handles_labels()[0]
        ax.legend(lines, [str(line.get_label()) for line in lines], loc="upper right")
        fig.tight_layout()
        fig.savefig(path, dpi=100)
        plt.close(fig)


def elbow_kmeans(
    features: np.ndarray,
    k_values: Sequence[int] = tuple(range(2, 11)),
    seed: int = 0,
    normalize: bool = True,
    n_init: int = 10,
    silhouette_sample: int | None = 4000,
    fit_sample: int | None = 20_000,
    progress: bool = True,
) -> ElbowResult:
    """Fit KMeans for each ``k`` and choose ``k`` at the knee of the inertia curve (the elbow method).

    Ferrante et al. 2022 (Sec. 2) run "KMeans combined with the elbow method" on the frozen latent space. The knee
    is located with ``kneed`` (Satopaa et al. 2011) on the convex, decreasing inertia curve; when it finds none,
    the ``k`` with the highest silhouette is used. Silhouette scores are recorded for every ``k``.

    Args:
        features: ``(N, D)`` feature matrix.
        k_values: increasing cluster counts to try, each at least 2 (silhouette needs two clusters).
        seed: random state of KMeans and of the silhouette subsample.
        normalize: L2-normalise rows first, so that clustering agrees with the cosine similarity used to assign
            images to prototypes.
        n_init: KMeans restarts per ``k``.
        silhouette_sample: rows sampled for the silhouette score (it is quadratic in N); ``None`` uses all.
        fit_sample: above this many rows, each KMeans is fitted on a random subsample of this size and its
            inertia is then measured on every row (one assignment pass), so the cost grows with N only through that
            pass (``benchmarks/scaling.py``); ``None`` always fits on every row.
        progress: show a progress bar.

    Returns:
        An :class:`ElbowResult`.

    Raises:
        ValueError: for a non-2-D feature matrix, fewer than two values of ``k``, a ``k`` below 2 or not below N,
            or a ``fit_sample`` not above the largest ``k``.
    """
    features = validate_features(features)
    k_values = validate_k_values(k_values, len(features))
    if fit_sample is not None and fit_sample <= k_values[-1]:
        raise ValueError(f"fit_sample must exceed the largest k ({k_values[-1]}), got {fit_sample}.")
    data = l2_normalize(features) if normalize else features
    sample = None if silhouette_sample is None else min(silhouette_sample, len(data))
    fit_rows = (
        data if fit_sample is None or len(data) <= fit_sample
        else data[np.sort(np.random.default_rng(seed).choice(len(data), fit_sample, replace=False))]
    )
    models: dict[int, KMeans] = {}
    inertias: list[float] = []
    silhouettes: list[float] = []
    for k in tqdm(k_values, desc="KMeans over k", disable=not progress):
        model = KMeans(n_clusters=k, n_init=n_init, random_state=seed).fit(fit_rows)
        models[k] = model
        if fit_rows is data:
            labels, inertia = model.labels_, float(model.inertia_)
        else:  # nearest centres and their distances in one pass over every row
            labels, distances = pairwise_distances_argmin_min(data, model.cluster_centers_)
            inertia = float(np.square(distances, dtype=np.float64).sum())
        inertias.append(inertia)
        silhouettes.append(float(silhouette_score(data, labels, sample_size=sample, random_state=seed)))
    knee = KneeLocator(k_values, inertias, curve="convex", direction="decreasing").knee
    knee_found = knee is not None
    k = int(knee) if knee_found else k_values[int(np.argmax(silhouettes))]
    return ElbowResult(k_values, inertias, silhouettes, k, knee_found, normalize, models)
