"""What each stratum is: its size, its make-up by header fields against the whole archive, the values that dominate
it, its most and least typical members, and the content of ``report.json`` built from the tables."""

from __future__ import annotations

import array
import datetime
import heapq
from collections import Counter, defaultdict
from collections.abc import Iterable, Mapping, Sequence

import numpy as np

from monai_cae._version import __version__

from .tables import OutlierThreshold, patient_rows, stratum_transitions

__all__ = [
    "DOMINANT_LIFT",
    "DOMINANT_MIN_IMAGES",
    "DOMINANT_SHARE",
    "MAKEUP_FIELDS",
    "ReportTally",
    "dominant_values",
    "makeup_value",
    "outlier_description",
    "outlier_gallery",
    "report_content",
    "strata_makeup",
    "stratum_examples",
]

MAKEUP_FIELDS = {
    "view": "ViewPosition",
    "modality": "Modality",
    "manufacturer": "Manufacturer",
    "station": "StationName",
    "body_part": "BodyPartExamined",
    "sex": "PatientSex",
    "age_band": "age band",
    "study_year": "study year",
    "pixel_spacing": "pixel spacing (mm)",
}
"""Image-row keys whose make-up explains a stratum, with the name shown for each."""

UNKNOWN = "unknown"
DOMINANT_SHARE = 0.8
DOMINANT_LIFT = 1.5
DOMINANT_MIN_IMAGES = 5
"""A value dominates a stratum of at least :data:`DOMINANT_MIN_IMAGES` films when it is at least
:data:`DOMINANT_SHARE` of the stratum and at least :data:`DOMINANT_LIFT` times its share of the archive: such a
stratum may only separate scanners, views or sites, which is a finding in itself."""
# the reference images are the training run's (its prototypes/embeddings.npy): a reader is told so
REPORTED_SOURCES = {"fixed": "fixed", "reference": "training", "cohort": "cohort"}
MAKEUP_TOP = 6  # values listed per field; the rest are summed as "other"


def makeup_value(row: Mapping, field: str) -> str:
    """The value of a make-up field for an image row: study year from the study date, pixel spacing rounded to
    0.01 mm (``"0.17"``, or ``"0.17 x 0.15"`` when rows and columns differ), ``"unknown"`` where the header has none.

    Args:
        row: an image row (:func:`~monai_cae.reports.image_rows`).
        field: a key of :data:`MAKEUP_FIELDS`.

    Returns:
        The value shown.

    Raises:
        ValueError: for a field that is not a key of :data:`MAKEUP_FIELDS`.
    """
    if field not in MAKEUP_FIELDS:
        raise ValueError(f"field must be one of {sorted(MAKEUP_FIELDS)}, got {field!r}.")
    if field == "study_year":
        date = str(row["study_date"])
        value = date[:4] if len(date) == 8 and date.isdigit() else ""
    elif field == "pixel_spacing":
        try:
            spacing = [f"{float(v):.2f}" for v in str(row["pixel_spacing"]).split("\\") if v]
        except ValueError:
            spacing = []
        value = " x ".join(dict.fromkeys(spacing))  # one number when rows and columns agree
    else:
        value = str(row[field]).strip()
    return value or UNKNOWN


def dominant_values(
    counts: Mapping[str, Counter], total: int, archive: Mapping[str, Counter], archive_total: int
) -> list[dict]:
    """The values that dominate a stratum (the rule of :data:`DOMINANT_SHARE`).

    Args:
        counts: per make-up field, the stratum's films per value.
        total: the stratum's films.
        archive: per make-up field, the archive's films per value (the processed images).
        archive_total: the archive's films.

    Returns:
        ``{"field", "value", "share", "archive_share", "text"}`` per dominating value, in :data:`MAKEUP_FIELDS` order;
        ``text`` reads like ``"ViewPosition: 92 % AP, 8 % of the archive"``.
    """
    flags = []
    if total < DOMINANT_MIN_IMAGES or not archive_total:
        return flags
    for field, label in MAKEUP_FIELDS.items():
        for value, n in counts[field].items():
            share, archive_share = n / total, archive[field][value] / archive_total
            if share >= DOMINANT_SHARE and share >= DOMINANT_LIFT * archive_share:
                flags.append({
                    "field": field, "value": value, "share": share, "archive_share": archive_share,
                    "text": f"{label}: {100 * share:.0f} % {value}, {100 * archive_share:.0f} % of the archive",
                })
    return flags


def _breakdown(counts: Counter, total: int, archive: Counter, archive_total: int) -> list[dict]:
    ranked = sorted(counts.items(), key=lambda item: (-item[1], item[0]))
    listed = [
        {"value": v, "n": n, "share": n / total, "archive_share": archive[v] / archive_total}
        for v, n in ranked[:MAKEUP_TOP]
    ]
    rest = ranked[MAKEUP_TOP:]
    if rest:
        n = sum(c for _, c in rest)
        listed.append({
            "value": f"{len(rest)} other values", "n": n, "share": n / total,
            "archive_share": sum(archive[v] for v, _ in rest) / archive_total,
        })
    return listed


class _Lowest:
    """The ``n`` smallest keys pushed, with their values (a bounded heap: memory independent of the pushes)."""

    def __init__(self, n: int) -> None:
        self.n, self._heap = n, []  # type: ignore[var-annotated]

    def push(self, key: tuple, value: object) -> None:
        # a max-heap of the kept keys (negated), so that the largest kept is the one to drop
        item = (tuple(-k for k in key), value)
        if len(self._heap) < self.n:
            heapq.heappush(self._heap, item)
        elif self.n and item[0] > self._heap[0][0]:
            heapq.heapreplace(self._heap, item)

    def sorted(self) -> list:
        """The kept values, smallest key first."""
        return [value for _, value in sorted(self._heap, key=lambda item: item[0], reverse=True)]


class ReportTally:
    """What ``report.json`` says about a cohort, gathered one image row and one patient at a time.

    Everything it keeps is bounded by the number of strata, of header values and of images shown, except two
    numbers per image (similarity and stratum), so that a report of any archive is built in about the same memory.
    Images are added in row order (positions ``0, 1, ...``), then patients in patient id order.

    Args:
        k: number of strata of the model.
        examples: exemplars and least typical members listed per stratum.
        max_outliers: outliers in the gallery.

    Raises:
        ValueError: for a negative ``examples``.
    """

    def __init__(self, k: int, examples: int = 6, max_outliers: int = 24) -> None:
        if examples < 0:
            raise ValueError(f"examples per stratum must be >= 0, got {examples}.")
        self.k = k
        self.similarity, self.strata = array.array("d"), array.array("q")
        self.n_outliers = self.n_duplicates = 0
        self.archive = {field: Counter() for field in MAKEUP_FIELDS}
        self.makeup = [{field: Counter() for field in MAKEUP_FIELDS} for _ in range(k)]
        self.films = [0] * k
        self.exemplars = [_Lowest(examples) for _ in range(k)]
        self.lowest = [_Lowest(2 * examples) for _ in range(k)]  # the least typical are among them
        self.examples = examples
        self.outliers = _Lowest(max_outliers)
        self.patients = self.studies = self.changed = self.with_disagreement = self.disagreements = self.tied = 0
        self.majority = Counter()
        self.present = [0] * k
        self.transitions = np.zeros((k, k), dtype=np.int64)

    def add_image(self, row: Mapping) -> None:
        """Count one image row (:func:`~monai_cae.reports.image_rows`), the next in row order."""
        position, stratum, similarity = len(self.similarity), int(row["stratum"]), float(row["similarity"])
        self.similarity.append(similarity)
        self.strata.append(stratum)
        self.n_outliers += bool(row["outlier"])
        if row["duplicate_of"]:  # each distinct film counts once, so copies do not tilt a share
            self.n_duplicates += 1
            return
        self.films[stratum] += 1
        for field in MAKEUP_FIELDS:
            value = makeup_value(row, field)
            self.archive[field][value] += 1
            self.makeup[stratum][field][value] += 1
        if not row["outlier"]:
            self.exemplars[stratum].push((-similarity, position), (position, row))
        else:
            self.outliers.push((similarity, position), (position, row))
        self.lowest[stratum].push((similarity, position), (position, row))

    def add_patient(self, patient: Mapping, studies: Sequence[Mapping], strata: Iterable[int]) -> None:
        """Count one patient row and its studies (:func:`~monai_cae.reports.patient_rows`), with the strata of
        their images."""
        self.patients += 1
        self.studies += patient["n_studies"]
        self.changed += bool(patient["stratum_changed"])
        self.with_disagreement += patient["studies_with_disagreement"] > 0
        self.disagreements += patient["studies_with_disagreement"]
        self.tied += bool(patient["majority_tie"])
        self.majority[patient["majority_stratum"]] += 1
        for stratum in set(strata):
            self.present[stratum] += 1
        self.transitions += stratum_transitions({"": studies}, self.k)

    def stratum_examples(self) -> tuple[list[list[tuple[int, Mapping]]], list[list[tuple[int, Mapping]]]]:
        """Per stratum, the exemplars (most similar first) and the least typical (least similar first), as
        ``(position, row)``."""
        exemplars = [heap.sorted() for heap in self.exemplars]
        least = []
        for best, lowest in zip(exemplars, self.lowest):
            chosen = {position for position, _ in best}
            least.append([item for item in lowest.sorted() if item[0] not in chosen][: self.examples])
        return exemplars, least

    def makeup_content(self) -> tuple[list[dict], dict]:
        """The make-up of every stratum and of the archive (see :func:`strata_makeup`)."""
        archive_total = sum(self.films)
        strata = []
        for j in range(self.k):
            counts, total = self.makeup[j], self.films[j]
            strata.append({
                "n_films": total,
                "makeup": {f: _breakdown(counts[f], total, self.archive[f], archive_total) for f in MAKEUP_FIELDS}
                if total else {},
                "dominant": dominant_values(counts, total, self.archive, archive_total),
            })
        whole = {f: _breakdown(self.archive[f], archive_total, self.archive[f], archive_total) for f in MAKEUP_FIELDS}
        return strata, {"n_films": archive_total, "makeup": whole if archive_total else {}}

    def content(
        self,
        threshold: OutlierThreshold,
        latent_size: int = 0,
        files: int | None = None,
        skipped_by_reason: Mapping[str, int] | None = None,
        model_name: str = "",
        stratum_names: Mapping[int, str] | None = None,
        options: Mapping[str, object] | None = None,
    ) -> dict:
        """The content of ``report.json`` but its ``patients`` (see :func:`report_content` for the arguments)."""
        k = self.k
        names = {int(j): str(name) for j, name in (stratum_names or {}).items()}
        if any(not 0 <= j < k for j in names):
            raise ValueError(f"stratum_names must name strata 0..{k - 1}, got indices {sorted(names)}.")
        skipped_by_reason = dict(skipped_by_reason or {})
        makeup, archive_makeup = self.makeup_content()
        exemplars, least = self.stratum_examples()
        strata_of = np.frombuffer(self.strata, dtype=np.int64) if self.strata else np.zeros(0, np.int64)
        similarity = np.frombuffer(self.similarity, dtype=np.float64) if self.similarity else np.zeros(0)
        strata = []
        for j in range(k):
            mine = strata_of == j
            strata.append({
                "stratum": j, "name": names.get(j, ""), "n_images": int(mine.sum()), "empty": not mine.any(),
                "n_patients": self.majority[j], "n_patients_with_images": self.present[j],
                "mean_similarity": float(similarity[mine].mean()) if mine.any() else 0.0,
                **makeup[j],
                "exemplars": [row["image_id"] for _, row in exemplars[j]],
                "least_typical": [row["image_id"] for _, row in least[j]],
            })
        non_empty = sum(not s["empty"] for s in strata)
        processed = len(similarity)
        return {
            "version": __version__,
            "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
            "status": "ok" if processed else "failed",
            "message": "" if processed else "No image could be processed: every file is listed in skipped.csv.",
            "model": {"name": model_name, "num_strata": k, "latent_size": latent_size,
                      "strata_names": {str(j): names[j] for j in sorted(names)}},
            "options": dict(options or {}),
            "counts": {
                "files": processed + sum(skipped_by_reason.values()) if files is None else files,
                "processed": processed, "skipped": sum(skipped_by_reason.values()),
                "duplicates": self.n_duplicates,
                "patients": self.patients, "studies": self.studies,
                "patients_changed": self.changed,
                "patients_with_disagreement": self.with_disagreement,
                "studies_with_disagreement": self.disagreements,
                "patients_tied": self.tied,
                "strata_non_empty": non_empty, "strata_empty": k - non_empty,
                "skipped_by_reason": skipped_by_reason,
            },
            "outlier": {
                "threshold": threshold.value, "source": REPORTED_SOURCES[threshold.source],
                "percentile": threshold.percentile,
                "description": outlier_description(threshold), "n_outliers": self.n_outliers,
                "gallery": [row["image_id"] for _, row in self.outliers.sorted()],
            },
            "dominance_rule": (
                f"a value dominates a stratum of at least {DOMINANT_MIN_IMAGES} films when it is at least "
                f"{100 * DOMINANT_SHARE:.0f} % of the stratum and at least {DOMINANT_LIFT:g} times its share of the "
                "archive"
            ),
            "archive_makeup": archive_makeup,
            "strata": strata,
            "transitions": [
                {"from": a, "to": b, "count": int(self.transitions[a, b])}
                for a in range(k) for b in range(k) if self.transitions[a, b]
            ],
        }


def _tally(rows: Sequence[Mapping], k: int, examples: int = 6, max_outliers: int = 24) -> ReportTally:
    tally = ReportTally(k, examples, max_outliers)
    for row in rows:
        tally.add_image(row)
    return tally


def strata_makeup(rows: Sequence[Mapping], k: int) -> tuple[list[dict], dict]:
    """Make-up of every stratum and of the whole archive (its processed images) by the fields of :data:`MAKEUP_FIELDS`.

    Each distinct film counts once (rows with ``duplicate_of`` are left out), so copies do not tilt a share.

    Args:
        rows: image rows (:func:`~monai_cae.reports.image_rows`).
        k: number of strata.

    Returns:
        ``(strata, archive)``: per stratum ``{"n_films", "makeup", "dominant"}`` where ``makeup`` maps each field to
        its most frequent values ``{"value", "n", "share", "archive_share"}`` (then the others summed) and
        ``dominant`` is :func:`dominant_values`; and the archive's ``{"n_films", "makeup"}``.
    """
    return _tally(rows, k).makeup_content()


def stratum_examples(rows: Sequence[Mapping], k: int, n: int = 6) -> tuple[list[list[int]], list[list[int]]]:
    """Row positions of each stratum's exemplars and least typical members.

    Exemplars are the ``n`` films most similar to the stratum's prototype (outliers left out); the least typical
    members are the ``n`` least similar of the others (outliers included). Copies (``duplicate_of``) are never shown
    twice.

    Args:
        rows: image rows (:func:`~monai_cae.reports.image_rows`).
        k: number of strata.
        n: images of each kind per stratum.

    Returns:
        ``(exemplars, least_typical)``: per stratum, row positions in order of similarity (highest first for the
        exemplars, lowest first for the least typical).

    Raises:
        ValueError: for a negative ``n``.
    """
    exemplars, least = _tally(rows, k, n).stratum_examples()
    return ([[p for p, _ in s] for s in exemplars], [[p for p, _ in s] for s in least])


def outlier_gallery(rows: Sequence[Mapping], n: int = 24) -> list[int]:
    """Row positions of the ``n`` least similar outlier films, least similar first."""
    k = 1 + max((int(r["stratum"]) for r in rows), default=0)
    return [position for position, _ in _tally(rows, k, 0, n).outliers.sorted()]


def outlier_description(threshold: OutlierThreshold) -> str:
    """One sentence on where the outlier threshold comes from and what it therefore means."""
    if threshold.source == "fixed":
        return "a fixed threshold given for this report"
    if threshold.source == "reference":
        return (f"percentile {threshold.percentile:g} of the training images' similarities: an outlier is less "
                f"typical than all but {threshold.percentile:g} % of the images the model was trained on")
    return (f"percentile {threshold.percentile:g} of this cohort's own similarities, for want of the training "
            f"images' (reference embeddings): it flags the least typical {threshold.percentile:g} % of this cohort "
            "whatever the cohort holds, not images unlike the training data")


def report_content(
    rows: Sequence[dict],
    k: int,
    threshold: OutlierThreshold,
    latent_size: int = 0,
    files: int | None = None,
    skipped_by_reason: Mapping[str, int] | None = None,
    model_name: str = "",
    stratum_names: Mapping[int, str] | None = None,
    options: Mapping[str, object] | None = None,
    examples: int = 6,
    max_outliers: int = 24,
) -> dict:
    """The content of ``report.json`` from the image rows: counts, outlier threshold, strata explained, transitions,
    patients with their studies in time order.

    Args:
        rows: image rows (:func:`~monai_cae.reports.image_rows`).
        k: number of strata of the model.
        threshold: the outlier threshold used for ``rows``; ``report["outlier"]["source"]`` is ``"training"`` for a
            reference threshold, ``"cohort"`` or ``"fixed"``, and ``["description"]`` says what that means.
        latent_size: the model's latent size.
        files: files found in the archive (the processed images when ``None``).
        skipped_by_reason: skipped files per reason code.
        model_name: what to call the model.
        stratum_names: names given to strata (:func:`~monai_cae.reports.read_stratum_names`).
        options: report options to record (``pseudonymized``, ``thumbnails``, ``duplicates_checked``).
        examples: exemplars and least typical members listed per stratum.
        max_outliers: outliers in the gallery.

    Returns:
        The report; ``strata[j]["exemplars"]``, ``["least_typical"]`` and ``outlier["gallery"]`` are image ids.

    Raises:
        ValueError: for a stratum name whose index is not one of the ``k`` strata.
    """
    tally = _tally(rows, k, examples, max_outliers)
    patients, timelines = patient_rows(rows, k)
    strata_of: dict[str, set[int]] = defaultdict(set)
    for r in rows:
        strata_of[r["patient_id"]].add(int(r["stratum"]))
    for p in patients:
        tally.add_patient(p, timelines[p["patient_id"]], strata_of[p["patient_id"]])
    report = tally.content(threshold, latent_size, files, skipped_by_reason, model_name, stratum_names, options)
    report["patients"] = [{**p, "studies": timelines[p["patient_id"]]} for p in patients]
    return report
