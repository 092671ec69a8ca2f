"""Per-image and per-patient strata tables, and the outlier threshold."""

from __future__ import annotations

import math
import os
from collections import Counter, defaultdict
from collections.abc import Mapping, MutableMapping, Sequence
from dataclasses import dataclass

import numpy as np

from monai_cae.data.manifest import ManifestEntry
from monai_cae.engines.model_card import read_model_card, training_similarity_percentile
from monai_cae.inference import StrataAssignment

__all__ = [
    "NO_PATIENT_ID",
    "OUTLIER_SOURCES",
    "image_columns",
    "PATIENT_COLUMNS",
    "OutlierThreshold",
    "image_rows",
    "nearest_similarity",
    "outlier_threshold",
    "patient_rows",
    "training_outlier_threshold",
    "reference_similarities",
    "stratum_transitions",
    "vote",
]

PATIENT_COLUMNS = [
    "patient_id",
    "patient_id_missing",
    "n_images",
    "n_duplicates",
    "n_studies",
    "first_study_date",
    "last_study_date",
    "study_strata",
    "majority_stratum",
    "majority_share",
    "majority_probability",
    "majority_tie",
    "tied_strata",
    "stratum_changed",
    "studies_with_disagreement",
    "n_outliers",
]


def image_columns(k: int) -> list[str]:
    """Columns of ``strata_per_image.csv`` for ``k`` strata."""
    return [
        "image_id", "patient_id", "patient_id_missing", "study_uid", "study_date", "series_uid", "sop_uid",
        "modality", "view", "body_part", "manufacturer", "station", "sex", "age_band", "pixel_spacing",
        "stratum", *[f"prob_{j}" for j in range(k)], "similarity", "outlier", "duplicate_of",
    ]


OUTLIER_SOURCES = ("fixed", "reference", "cohort")

NO_PATIENT_ID = "(no PatientID)"
"""What an image without PatientID is grouped under, followed by its study (or image id): never one shared patient."""


@dataclass
class OutlierThreshold:
    """Cosine similarity to the nearest prototype below which an image is flagged as an outlier.

    Attributes:
        value: the threshold.
        source: ``"fixed"``, ``"reference"`` (a percentile of the reference embeddings' similarities: the training
            set's, so that reports call it ``"training"``) or ``"cohort"`` (a percentile of the cohort's own
            similarities).
        percentile: the percentile used, or ``None`` for a fixed threshold.
    """

    value: float
    source: str
    percentile: float | None


def nearest_similarity(embeddings: np.ndarray, prototypes: np.ndarray) -> np.ndarray:
    """Cosine similarity of each embedding to its nearest prototype.

    Args:
        embeddings: ``(N, D)`` latents.
        prototypes: ``(K, D)`` prototypes.

    Returns:
        ``(N,)`` similarities.
    """
    e = embeddings / np.maximum(np.linalg.norm(embeddings, axis=1, keepdims=True), 1e-12)
    p = prototypes / np.maximum(np.linalg.norm(prototypes, axis=1, keepdims=True), 1e-12)
    return (e @ p.T).max(1)


def reference_similarities(
    reference_embeddings: str | np.ndarray | None, prototypes: np.ndarray
) -> np.ndarray | None:
    """Nearest-prototype similarities of reference latents (e.g. the training run's ``prototypes/embeddings.npy``).

    Args:
        reference_embeddings: ``(N, D)`` latents, a ``.npy`` path, or ``None``.
        prototypes: ``(K, D)`` prototypes.

    Returns:
        ``(N,)`` similarities, or ``None`` without reference.

    Raises:
        FileNotFoundError: for a missing ``.npy`` file.
        ValueError: for latents that are not ``(N, D)``.
    """
    if reference_embeddings is None:
        return None
    if isinstance(reference_embeddings, str):
        if not os.path.isfile(reference_embeddings):
            raise FileNotFoundError(f"reference_embeddings not found: {os.path.abspath(reference_embeddings)}.")
        reference_embeddings = np.load(reference_embeddings)
    reference = np.asarray(reference_embeddings, dtype=np.float32)
    if reference.ndim != 2 or reference.shape[1] != prototypes.shape[1]:
        raise ValueError(
            f"reference_embeddings must be (N, {prototypes.shape[1]}) latents, got shape {reference.shape}."
        )
    return nearest_similarity(reference, prototypes)


def training_outlier_threshold(model_path: str, percentile: float) -> OutlierThreshold | None:
    """The outlier threshold the model's training images give: their similarity percentile kept in its card.

    Args:
        model_path: the trained ``model.pt`` (its ``model.json`` beside it).
        percentile: the percentile (one the card keeps, e.g. 1).

    Returns:
        A ``"reference"`` threshold, or ``None`` for a model without card or without that percentile.
    """
    value = training_similarity_percentile(read_model_card(model_path), percentile)
    return None if value is None else OutlierThreshold(value, "reference", percentile)


def outlier_threshold(
    similarities: np.ndarray,
    threshold: float | OutlierThreshold | None = None,
    percentile: float = 1.0,
    reference_similarities: np.ndarray | None = None,
) -> OutlierThreshold:
    """Choose the outlier threshold: a fixed value, else a percentile of reference similarities, else of the cohort.

    The reference is best the training set (its embeddings are ``prototypes/embeddings.npy`` of the training run):
    images less similar to every prototype than all but ``percentile`` % of the training images are outliers.
    Without one, the cohort's own similarities are used, which flags the least typical ``percentile`` % of it.

    Args:
        similarities: ``(N,)`` nearest-prototype similarities of the cohort.
        threshold: fixed cosine similarity in [-1, 1], or an :class:`OutlierThreshold` whose value came from
            elsewhere (e.g. ``OutlierThreshold(v, "reference", 1.0)`` for a training percentile kept with the model);
            wins when given.
        percentile: percentile in [0, 100].
        reference_similarities: nearest-prototype similarities of reference images.

    Returns:
        The threshold and where it came from.

    Raises:
        ValueError: for a threshold outside [-1, 1] or a percentile outside [0, 100].
    """
    if threshold is not None:
        chosen = threshold if isinstance(threshold, OutlierThreshold) else OutlierThreshold(threshold, "fixed", None)
        if not -1.0 <= chosen.value <= 1.0:
            raise ValueError(f"outlier_threshold must be a cosine similarity in [-1, 1], got {chosen.value}.")
        if chosen.source not in OUTLIER_SOURCES:
            raise ValueError(f"outlier threshold source must be one of {OUTLIER_SOURCES}, got {chosen.source!r}.")
        return chosen
    if not 0.0 <= percentile <= 100.0:
        raise ValueError(f"outlier_percentile must be in [0, 100], got {percentile}.")
    if reference_similarities is not None and len(reference_similarities):
        return OutlierThreshold(float(np.percentile(reference_similarities, percentile)), "reference", percentile)
    value = float(np.percentile(similarities, percentile)) if len(similarities) else -1.0
    return OutlierThreshold(value, "cohort", percentile)


def image_rows(
    entries: Sequence[ManifestEntry],
    assignment: StrataAssignment,
    threshold: OutlierThreshold,
    digests: Mapping[int, str] | None = None,
    first_of: MutableMapping[str, str] | None = None,
) -> list[dict]:
    """One row per processed image (columns :func:`image_columns`), in assignment order.

    ``duplicate_of`` names the first image (in assignment order) with the same digest, so that pixel-identical
    copies of one film are seen; it is empty for every image without ``digests``. An image without PatientID is
    never merged with other people's: its ``patient_id`` is ``"(no PatientID) <study>"`` (its StudyInstanceUID, or
    its image id without one), and ``patient_id_missing`` is true.

    Args:
        entries: the cohort's entries; ``assignment.indices`` index into them.
        assignment: the model's assignment of the images.
        threshold: outlier threshold.
        digests: digest of each image's model input by entry index (:func:`~monai_cae.inference.image_digest`).
        first_of: the first image id of each film seen so far, updated here, for rows made a part at a time (the
            mapping of the earlier parts); a new one when ``None``.

    Returns:
        Rows as dictionaries; probabilities and similarity are floats, ``outlier`` a bool. The key ``film`` (not a
        column) identifies the distinct film: the digest, or the image id without digests; ``dataset_index`` (not a
        column either) is the entry index.
    """
    rows = []
    first_of = {} if first_of is None else first_of
    # the properties compute over every image: once, not once per row
    clusters, similarities = assignment.clusters, assignment.nearest_similarity
    for i, index in enumerate(assignment.indices):
        e = entries[int(index)]
        similarity = float(similarities[i])
        film = digests.get(int(index), e.image_id) if digests is not None else e.image_id
        original = first_of.setdefault(film, e.image_id)
        # different people without PatientID must not become one patient "": each study (or file) stands alone
        patient = e.PatientID or f"{NO_PATIENT_ID} {e.StudyInstanceUID or e.image_id}"
        rows.append(
            {
                "image_id": e.image_id, "patient_id": patient, "patient_id_missing": not e.PatientID,
                "study_uid": e.StudyInstanceUID,
                "study_date": e.StudyDate, "series_uid": e.SeriesInstanceUID, "sop_uid": e.SOPInstanceUID,
                "modality": e.Modality, "view": e.ViewPosition, "body_part": e.BodyPartExamined,
                "manufacturer": e.Manufacturer, "station": e.StationName, "sex": e.PatientSex,
                "age_band": e.PatientAge, "pixel_spacing": e.PixelSpacing,
                "stratum": int(clusters[i]),
                **{f"prob_{j}": float(p) for j, p in enumerate(assignment.probabilities[i])},
                "similarity": similarity, "outlier": bool(similarity < threshold.value),
                "duplicate_of": "" if original == e.image_id else original, "film": film, "dataset_index": int(index),
            }
        )
    return rows


def vote(rows: Sequence[dict], k: int) -> tuple[int, list[int]]:
    """The majority stratum of some images, and the strata that tie for it.

    Args:
        rows: image rows (:func:`image_rows`).
        k: number of strata.

    Returns:
        ``(majority, tied)``: ``tied`` lists every stratum with the largest count when more than one has it (empty
        otherwise); the tie goes to the higher mean probability, then to the lower index, so that it is never
        broken by the order of the rows.
    """
    counts = Counter(r["stratum"] for r in rows)
    top = max(counts.values())
    tied = sorted(s for s, n in counts.items() if n == top)
    # fsum: the exactly rounded sum, so that equal means compare equal in any row order
    mean = {s: math.fsum(r[f"prob_{s}"] for r in rows) for s in tied}
    majority = min(tied, key=lambda s: (-mean[s], s))
    return int(majority), tied if len(tied) > 1 else []


def _distinct(rows: Sequence[dict]) -> list[dict]:
    # each film once: a pixel-identical copy adds no evidence to a share
    seen: set[str] = set()
    films = []
    for r in rows:
        if r["film"] not in seen:
            seen.add(r["film"])
            films.append(r)
    return films


def patient_rows(rows: Sequence[dict], k: int) -> tuple[list[dict], dict[str, list[dict]]]:
    """Group image rows by patient and study.

    Shares count each distinct film of the patient once (pixel-identical copies, ``n_duplicates``, are left out).
    A study's stratum is the majority of its films, and a study whose films fall in different strata is a
    disagreement. The patient's majority stratum is the majority over their films; ``majority_share`` is the share of
    their films in it and ``majority_probability`` the mean soft probability of it over those films (the model's
    certainty). A tie is reported (``majority_tie``, ``tied_strata``) and broken by :func:`vote`.
    ``stratum_changed`` is true when the patient's studies do not all have the same stratum.
    ``patient_id_missing`` is true for an identity :func:`image_rows` made up for images without PatientID (one per
    study, or per file).

    Args:
        rows: output of :func:`image_rows`.
        k: number of strata.

    Returns:
        ``(patients, studies)``: one row per patient (columns :data:`PATIENT_COLUMNS`, sorted by patient id),
        and per patient the list of ``{"study_uid", "study_date", "n_images", "stratum", "strata",
        "disagreement"}`` in time order (``strata``: the distinct strata of the study's films).
    """
    by_patient: dict[str, list[dict]] = defaultdict(list)
    for r in rows:
        by_patient[r["patient_id"]].append(r)
    patients, timelines = [], {}
    for pid in sorted(by_patient):
        images = by_patient[pid]
        films = _distinct(images)
        by_study: dict[str, list[dict]] = defaultdict(list)
        for r in films:
            by_study[r["study_uid"]].append(r)
        studies = []
        for uid, group in by_study.items():
            strata = sorted({r["stratum"] for r in group})
            studies.append(
                {"study_uid": uid, "study_date": group[0]["study_date"], "n_images": len(group),
                 "stratum": vote(group, k)[0], "strata": strata, "disagreement": len(strata) > 1}
            )
        studies.sort(key=lambda s: (s["study_date"], s["study_uid"]))
        majority, tied = vote(films, k)
        dates = [s["study_date"] for s in studies if s["study_date"]]
        patients.append(
            {
                "patient_id": pid,
                "patient_id_missing": images[0]["patient_id_missing"],
                "n_images": len(images),
                "n_duplicates": len(images) - len(films),
                "n_studies": len(studies),
                "first_study_date": min(dates) if dates else "",
                "last_study_date": max(dates) if dates else "",
                "study_strata": " ".join(f"{s['study_date'] or '?'}:{s['stratum']}" for s in studies),
                "majority_stratum": majority,
                "majority_share": sum(r["stratum"] == majority for r in films) / len(films),
                "majority_probability": float(np.mean([r[f"prob_{majority}"] for r in films])),
                "majority_tie": bool(tied),
                "tied_strata": " ".join(map(str, tied)),
                "stratum_changed": len({s["stratum"] for s in studies}) > 1,
                "studies_with_disagreement": sum(s["disagreement"] for s in studies),
                "n_outliers": sum(bool(r["outlier"]) for r in images),
            }
        )
        timelines[pid] = studies
    return patients, timelines


def stratum_transitions(timelines: Mapping[str, Sequence[dict]], k: int) -> np.ndarray:
    """Counts of stratum transitions between consecutive studies of the same patient.

    Args:
        timelines: per patient, studies in time order (:func:`patient_rows`).
        k: number of strata.

    Returns:
        ``(k, k)`` integer matrix: entry ``[a, b]`` counts a study in stratum ``a`` followed by the patient's next
        study in stratum ``b`` (the diagonal counts consecutive studies that stayed).
    """
    counts = np.zeros((k, k), dtype=np.int64)
    for studies in timelines.values():
        for before, after in zip(studies, studies[1:]):
            counts[before["stratum"], after["stratum"]] += 1
    return counts
