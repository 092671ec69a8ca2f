"""The self-contained HTML page of a cohort report: inline style and images, no script, no external resource.

The page stays light whatever the archive's size: the patient tables show their first rows (the CSV files hold
every row), and images are shown only for a bounded number of exemplars, least typical members and outliers.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from html import escape

from monai_cae.data.unusable import SKIP_REASONS

from .explain import MAKEUP_FIELDS

__all__ = ["MAX_PATIENT_ROWS", "THUMBNAIL_WIDTH", "PatientTables", "render_report_html"]

MAX_PATIENT_ROWS = 200  # per patient table; strata_per_patient.csv has every patient
THUMBNAIL_WIDTH = 140  # pixels shown for an image of any input size

_STYLE = """
body { font-family: sans-serif; margin: 2em auto; max-width: 1300px; padding: 0 1em; color: #222; line-height: 1.4; }
h1 { font-size: 1.6em; } h2 { font-size: 1.3em; margin-top: 2em; border-bottom: 1px solid #ccc; }
h3 { font-size: 1.1em; margin: 1.2em 0 0.4em; }
table { border-collapse: collapse; margin: 0.5em 0; font-size: 0.9em; }
th, td { border: 1px solid #ccc; padding: 3px 8px; text-align: left; vertical-align: top; }
th { background: #f0f0f0; }
td.num { text-align: right; font-variant-numeric: tabular-nums; }
.scroll { overflow-x: auto; max-width: 100%; }
.cards { display: flex; flex-wrap: wrap; gap: 1em; }
.card { border: 1px solid #ccc; border-radius: 6px; padding: 0.6em 1em; min-width: 8em; }
.card b { display: block; font-size: 1.5em; }
.card small { display: block; color: #555; }
section.stratum { border: 1px solid #ccc; border-radius: 6px; padding: 0.2em 1em 1em; margin: 1.5em 0; }
.gallery { display: flex; flex-wrap: wrap; gap: 6px; align-items: flex-start; }
figure { margin: 0; width: 140px; font-size: 0.75em; color: #555; overflow-wrap: anywhere; }
img.pixel { image-rendering: pixelated; border: 1px solid #999; display: block; }
.flag { color: #b00; font-weight: bold; }
.note { color: #555; font-size: 0.9em; }
.share { white-space: nowrap; margin-right: 1.2em; }
.share i { color: #777; font-style: normal; }
"""


def _cell(value: object) -> str:
    if isinstance(value, bool):
        return '<td class="flag">yes</td>' if value else "<td>no</td>"
    if isinstance(value, float):
        return f'<td class="num">{value:.3f}</td>'
    if isinstance(value, int):
        return f'<td class="num">{value}</td>'
    return f"<td>{escape(str(value))}</td>"


def _table(headers: Sequence[str], rows: Sequence[Sequence[object]], raw_columns: Sequence[int] = (),
           table_id: str = "") -> str:
    head = "".join(f"<th>{escape(h)}</th>" for h in headers)
    body = []
    for row in rows:
        cells = [f"<td>{v}</td>" if i in raw_columns else _cell(v) for i, v in enumerate(row)]
        body.append("<tr>" + "".join(cells) + "</tr>")
    identifier = f' id="{table_id}"' if table_id else ""
    return (f'<div class="scroll"><table{identifier}><thead><tr>{head}</tr></thead><tbody>{"".join(body)}</tbody>'
            "</table></div>")


def _img(uri: str, alt: str, width: int = THUMBNAIL_WIDTH) -> str:
    return f'<img class="pixel" src="{escape(uri)}" alt="{escape(alt)}" title="{escape(alt)}" width="{width}">'


def _gallery(images: Sequence[tuple[str, str]], gallery_id: str = "") -> str:
    figures = "".join(
        f"<figure>{_img(uri, caption)}<figcaption>{escape(caption)}</figcaption></figure>" for caption, uri in images
    )
    identifier = f' id="{gallery_id}"' if gallery_id else ""
    return f'<div class="gallery"{identifier}>{figures or "<p class=note>none</p>"}</div>'


def _label(j: int, names: Mapping[str, str]) -> str:
    return f"{j} ({names[str(j)]})" if str(j) in names else str(j)


def _makeup_table(stratum: dict) -> str:
    rows = []
    for field, label in MAKEUP_FIELDS.items():
        shares = "".join(
            f'<span class="share">{escape(v["value"])} <b>{100 * v["share"]:.0f} %</b> '
            f'<i>(archive {100 * v["archive_share"]:.0f} %)</i></span> '
            for v in stratum["makeup"][field]
        )
        rows.append([label, shares])
    return _table(["header field", "share of the stratum's films (and of the archive's)"], rows, raw_columns=[1])


def _stratum_section(stratum: dict, prototype_uri: str | None, galleries: dict | None, names: Mapping) -> str:
    j = stratum["stratum"]
    title = f"Stratum {_label(j, names)}"
    parts = [f'<section class="stratum" id="stratum-{j}"><h3>{escape(title)}</h3>']
    if stratum["empty"]:
        parts.append('<p class="note">Empty: no image of this archive is nearest to this prototype.</p></section>')
        return "".join(parts)
    parts.append(
        f'<p><b>{stratum["n_images"]}</b> images ({stratum["n_films"]} distinct films) of '
        f'<b>{stratum["n_patients_with_images"]}</b> patients; the majority stratum of <b>{stratum["n_patients"]}</b> '
        f'patients; mean similarity to the prototype {stratum["mean_similarity"]:.3f}.</p>'
    )
    for flag in stratum["dominant"]:
        parts.append(f'<p class="flag">Dominated by one value: {escape(flag["text"])}.</p>')
    prototype = [(f"decoded prototype {j}", prototype_uri)] if prototype_uri else []
    if galleries is None:
        parts.append("<h4>Decoded prototype</h4>" + _gallery(prototype))
    else:
        parts.append("<h4>Decoded prototype, then the most typical members (closest to it)</h4>"
                     + _gallery(prototype + list(galleries["exemplars"][j])))
        parts.append("<h4>Least typical members</h4>" + _gallery(galleries["least_typical"][j]))
    parts.append(_makeup_table(stratum))
    parts.append("</section>")
    return "".join(parts)


def _transition_table(report: dict) -> str:
    k = report["model"]["num_strata"]
    names = report["model"]["strata_names"]
    counts = {(t["from"], t["to"]): t["count"] for t in report["transitions"]}
    rows = [[f"from {_label(a, names)}", *[counts.get((a, b), 0) for b in range(k)]] for a in range(k)]
    return _table(["study in stratum", *[f"next study in {_label(b, names)}" for b in range(k)]], rows,
                  table_id="transition-table")


# column of strata_per_patient.csv: the header shown (short, so that the table fits the page)
_PATIENT_COLUMNS = {
    "patient_id": "patient", "n_images": "images", "n_duplicates": "copies", "n_studies": "studies",
    "study_strata": "study_strata (date:stratum)", "majority_stratum": "majority stratum",
    "majority_share": "majority_share", "majority_probability": "majority_probability", "majority_tie": "tie",
    "tied_strata": "tied strata", "stratum_changed": "changed", "studies_with_disagreement": "disagreeing studies",
    "n_outliers": "outliers",
}


class PatientTables:
    """The three patient tables of the page (stratum changed, a study that disagrees, every patient): the first
    :data:`MAX_PATIENT_ROWS` rows of each and how many there are, gathered one patient at a time."""

    TABLES = ("changed", "disagreement", "patients")

    def __init__(self) -> None:
        self.rows: dict[str, list[dict]] = {name: [] for name in self.TABLES}
        self.counts = dict.fromkeys(self.TABLES, 0)

    @classmethod
    def of(cls, patients: Iterable[dict]) -> PatientTables:
        """The tables of some patient rows."""
        tables = cls()
        for patient in patients:
            tables.add(patient)
        return tables

    def add(self, patient: dict) -> None:
        """Count the next patient row (:data:`~monai_cae.reports.PATIENT_COLUMNS`)."""
        member = {"changed": bool(patient["stratum_changed"]),
                  "disagreement": bool(patient["studies_with_disagreement"]), "patients": True}
        for name in self.TABLES:
            if member[name]:
                self.counts[name] += 1
                if len(self.rows[name]) < MAX_PATIENT_ROWS:
                    self.rows[name].append(patient)

    def html(self, name: str, title: str, note: str = "") -> str:
        """One table, with its title and count."""
        patients, total = self.rows[name], self.counts[name]
        parts = [f'<h2 id="{name}">{escape(title)} ({total})</h2>']
        if note:
            parts.append(f'<p class="note">{note}</p>')
        if patients:
            parts.append(_table(list(_PATIENT_COLUMNS.values()), [[p[c] for c in _PATIENT_COLUMNS] for p in patients]))
        if total > MAX_PATIENT_ROWS:
            parts.append(f'<p class="note">The first {MAX_PATIENT_ROWS} of {total}; strata_per_patient.csv has '
                         "every patient.</p>")
        return "".join(parts)


def render_report_html(
    report: dict,
    prototype_uris: Sequence[str],
    galleries: Mapping[str, Sequence] | None,
    latent_map_uri: str | None,
    overlay_uris: Sequence[tuple[str, str]] | None = None,
    patient_tables: PatientTables | None = None,
) -> str:
    """Render the report page.

    Args:
        report: the content of ``report.json`` (:func:`~monai_cae.reports.report_content`).
        prototype_uris: one PNG data URI per stratum: the decoded prototype.
        galleries: ``(caption, PNG data URI)`` lists: ``"exemplars"`` and ``"least_typical"`` per stratum, and
            ``"outliers"``; ``None`` when thumbnails are off.
        latent_map_uri: PNG data URI of the latent-space map, ``None`` when there is nothing to draw.
        overlay_uris: ``(caption, PNG data URI)`` of images beside their pixel cluster map (model with a local
            branch, thumbnails on); ``None`` or empty leaves the section out.
        patient_tables: the patient tables, gathered while the patients were written; from ``report["patients"]``
            when ``None``.

    Returns:
        The HTML document.
    """
    counts, outlier, model = report["counts"], report["outlier"], report["model"]
    names = model["strata_names"]
    k = model["num_strata"]
    empty = f"of the model's {k}, {counts['strata_empty'] or 'none'} empty"
    duplicates = counts["duplicates"] if report["options"].get("duplicates_checked") else "not checked"
    cards = [
        ("files found", counts["files"], ""), ("images processed", counts["processed"], ""),
        ("files skipped", counts["skipped"], ""), ("patients", counts["patients"], ""),
        ("studies", counts["studies"], ""), ("strata with images", counts["strata_non_empty"], empty),
        ("outlier images", outlier["n_outliers"], ""), ("pixel-identical copies", duplicates, ""),
        ("patients whose stratum changed", counts["patients_changed"], ""),
        ("studies whose images disagree", counts["studies_with_disagreement"], ""),
    ]
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        "<title>Cohort strata report</title>",
        f"<style>{_STYLE}</style></head><body>",
        "<h1>Cohort strata report</h1>",
        f'<p class="note">Created {escape(report["created"])} by monai_cae {escape(report["version"])}; '
        f'model {escape(model["name"])}. Identifiers are '
        f'{"keyed pseudonyms (HMAC-SHA256)" if report["options"].get("pseudonymized") else "as in the archive"}.</p>',
        '<div class="cards" id="summary">'
        + "".join(f'<div class="card"><b>{escape(str(v))}</b>{escape(label)}'
                  + (f"<small>{escape(small)}</small>" if small else "") + "</div>" for label, v, small in cards)
        + "</div>",
    ]
    if report["status"] != "ok":
        parts.append(f'<p class="flag" id="status">{escape(report["message"])}</p>')

    parts.append('<h2 id="strata">Strata</h2>')
    overview = []
    for s in report["strata"]:
        j = s["stratum"]
        prototype = _img(prototype_uris[j], f"decoded prototype of stratum {j}", 70) if j < len(prototype_uris) else ""
        flags = "; ".join(f["text"] for f in s["dominant"])
        overview.append([f'<a href="#stratum-{j}">{j}</a>', escape(s["name"]), s["n_images"], s["n_patients"],
                         s["n_patients_with_images"], s["mean_similarity"], prototype,
                         f'<span class="flag">{escape(flags)}</span>' if flags else ("empty" if s["empty"] else "")])
    parts.append(_table(
        ["stratum", "name", "images", "patients (majority)", "patients with images", "mean similarity",
         "decoded prototype", "dominated by"], overview, raw_columns=[0, 1, 6, 7], table_id="strata-table",
    ))
    parts.append(
        '<p class="note">Decoded prototype: the conditional decoder fed the prototype (scaled to the mean latent norm '
        "of its stratum) as latent and a one-hot assignment to its stratum. Make-up counts each distinct film once; "
        f"{escape(report['dominance_rule'])}: a stratum that only separates scanners, views or sites is a finding in "
        "itself. Name a stratum with <code>monai-cae-report --model MODEL --name-stratum INDEX NAME</code>; the name "
        "is kept beside the model and shown in every later report.</p>"
    )
    for s in report["strata"]:
        j = s["stratum"]
        parts.append(_stratum_section(s, prototype_uris[j] if j < len(prototype_uris) else None, galleries, names))

    if latent_map_uri:
        parts.append('<h2 id="latent-map">Latent space</h2>')
        parts.append(f'<img src="{escape(latent_map_uri)}" alt="2D map of the latent space" width="640">')

    parts.append('<h2 id="transitions">Strata over time</h2>')
    parts.append(
        '<p class="note">Each pair of consecutive studies of one patient, by the stratum of the first (rows) and of '
        "the next (columns); the diagonal counts studies that stayed in their stratum. Each patient's studies in date "
        "order are the study_strata column below (date:stratum).</p>"
    )
    parts.append(_transition_table(report))

    if overlay_uris:
        parts.append('<h2 id="pixel-clusters">Pixel clusters</h2>')
        parts.append(
            '<p class="note">Each image beside its pixel cluster map from the local branch (one colour per cluster, '
            "the same in every image); cluster_maps.npy has the maps of every image.</p>"
        )
        parts.append(
            '<div class="cards" id="cluster-overlays">'
            + "".join(f"<figure style='width:232px'>{_img(uri, caption, 232)}<figcaption>{escape(caption)}"
                      "</figcaption></figure>" for caption, uri in overlay_uris)
            + "</div>"
        )

    parts.append('<h2 id="outliers">Outliers</h2>')
    source = {"fixed": "fixed", "training": "from the training images", "cohort": "from this cohort itself"}
    parts.append(
        f"<p>An image is an outlier when its cosine similarity to the nearest prototype is below "
        f"<b>{outlier['threshold']:.3f}</b>: <b>{outlier['n_outliers']}</b> images. The threshold is "
        f'<b id="outlier-source">{source[outlier["source"]]}</b>: {escape(outlier["description"])}.</p>'
    )
    if galleries is not None:
        shown = len(galleries["outliers"])
        parts.append(f'<p class="note">The {shown} least similar outliers (strata_per_image.csv flags every one).</p>')
        parts.append(_gallery(galleries["outliers"], "outlier-gallery"))

    tables = PatientTables.of(report["patients"]) if patient_tables is None else patient_tables
    parts.append(tables.html("changed", "Patients whose stratum changed between studies"))
    parts.append(tables.html(
        "disagreement", "Patients with a study whose images disagree",
        "A study whose distinct films fall in different strata; such a study's stratum is its majority.",
    ))
    parts.append(tables.html(
        "patients", "Patients",
        "study_strata lists each study as date:stratum in time order. majority_share is the share of the patient's "
        "distinct films in the majority stratum (pixel-identical copies, n_duplicates, count once); "
        "majority_probability is the model's mean soft-assignment probability of that stratum over those films. "
        "A tie for the majority (majority_tie, tied_strata) goes to the higher mean probability.",
    ))

    parts.append(f'<h2 id="skipped">Skipped files ({counts["skipped"]})</h2>')
    reasons = sorted(counts["skipped_by_reason"].items(), key=lambda item: -item[1])
    parts.append(_table(["reason", "files", "meaning"], [[r, n, SKIP_REASONS.get(r, "")] for r, n in reasons]))
    parts.append('<p class="note">Every skipped file, with the specific cause, is listed in skipped.csv.</p>')
    parts.append("</body></html>")
    return "\n".join(parts)
