"""The self-contained HTML page of a cohort report: inline style and images, no script, no external resource."""

from __future__ import annotations

from collections.abc import Sequence
from html import escape

from monai_cae.data.dicom import SKIP_REASONS

__all__ = ["render_report_html"]

MAX_PATIENT_ROWS = 2000  # the page stays light; strata_per_patient.csv has every patient

_STYLE = """
body { font-family: sans-serif; margin: 2em auto; max-width: 1100px; color: #222; line-height: 1.4; }
h1 { font-size: 1.6em; } h2 { font-size: 1.25em; margin-top: 2em; border-bottom: 1px solid #ccc; }
table { border-collapse: collapse; margin: 0.5em 0; font-size: 0.9em; }
th, td { border: 1px solid #ccc; padding: 3px 8px; text-align: left; vertical-align: middle; }
th { background: #f0f0f0; }
td.num { text-align: right; font-variant-numeric: tabular-nums; }
.cards { display: flex; flex-wrap: wrap; gap: 1em; }
.card { border: 1px solid #ccc; border-radius: 6px; padding: 0.6em 1em; min-width: 8em; }
.card b { display: block; font-size: 1.5em; }
img.pixel { image-rendering: pixelated; border: 1px solid #999; margin: 1px; }
.flag { color: #b00; font-weight: bold; }
.note { color: #555; font-size: 0.9em; }
"""


def _cell(value: object) -> str:
    if isinstance(value, bool):
        return '<td class="flag">yes</td>' if value else "<td>no</td>"
    if isinstance(value, float):
        return f'<td class="num">{value:.3f}</td>'
    if isinstance(value, int):
        return f'<td class="num">{value}</td>'
    return f"<td>{escape(str(value))}</td>"


def _table(headers: Sequence[str], rows: Sequence[Sequence[object]], raw_columns: Sequence[int] = ()) -> str:
    head = "".join(f"<th>{escape(h)}</th>" for h in headers)
    body = []
    for row in rows:
        cells = [f"<td>{v}</td>" if i in raw_columns else _cell(v) for i, v in enumerate(row)]
        body.append("<tr>" + "".join(cells) + "</tr>")
    return f"<table><thead><tr>{head}</tr></thead><tbody>{''.join(body)}</tbody></table>"


def _img(uri: str, alt: str, width: int) -> str:
    return f'<img class="pixel" src="{escape(uri)}" alt="{escape(alt)}" width="{width}">'


def render_report_html(
    report: dict,
    prototype_uris: Sequence[str],
    thumbnail_uris: Sequence[Sequence[str]] | None,
    latent_map_uri: str | None,
    overlay_uris: Sequence[tuple[str, str]] | None = None,
) -> str:
    """Render the report page.

    Args:
        report: the content of ``report.json`` (counts, strata, outlier threshold, patients, skipped reasons).
        prototype_uris: one PNG data URI per stratum: the decoded prototype.
        thumbnail_uris: per stratum, PNG data URIs of example images; ``None`` when thumbnails are off.
        latent_map_uri: PNG data URI of the latent-space map, ``None`` when there is nothing to draw.
        overlay_uris: ``(caption, PNG data URI)`` of images beside their pixel cluster map (model with a local
            branch, thumbnails on); ``None`` or empty leaves the section out.

    Returns:
        The HTML document.
    """
    counts, outlier = report["counts"], report["outlier"]
    cards = [
        ("files found", counts["files"]), ("images processed", counts["processed"]),
        ("files skipped", counts["skipped"]), ("patients", counts["patients"]), ("studies", counts["studies"]),
        ("strata", report["model"]["num_strata"]), ("outlier images", outlier["n_outliers"]),
        ("patients whose stratum changed", counts["patients_changed"]),
    ]
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        "<title>Cohort strata report</title>",
        f"<style>{_STYLE}</style></head><body>",
        "<h1>Cohort strata report</h1>",
        f'<p class="note">Created {escape(report["created"])} by monai_cae {escape(report["version"])}; '
        f'model {escape(report["model"]["name"])}. Identifiers are '
        f'{"keyed pseudonyms (HMAC-SHA256)" if report["options"]["pseudonymized"] else "as in the archive"}.</p>',
        '<div class="cards" id="summary">'
        + "".join(f'<div class="card"><b>{v}</b>{escape(k)}</div>' for k, v in cards)
        + "</div>",
    ]
    if report["status"] != "ok":
        parts.append(f'<p class="flag" id="status">{escape(report["message"])}</p>')

    parts.append('<h2 id="strata">Strata</h2>')
    strata_rows = []
    for s in report["strata"]:
        k = s["stratum"]
        row = [k, s["n_images"], s["n_patients"], s["mean_similarity"]]
        row.append(_img(prototype_uris[k], f"prototype of stratum {k}", 112) if k < len(prototype_uris) else "")
        if thumbnail_uris is not None:
            row.append("".join(_img(u, f"example of stratum {k}", 84) for u in thumbnail_uris[k]))
        strata_rows.append(row)
    headers = ["stratum", "images", "patients (majority)", "mean similarity", "decoded prototype"]
    raw = [4]
    if thumbnail_uris is not None:
        headers.append("examples (closest to the prototype)")
        raw.append(5)
    parts.append(_table(headers, strata_rows, raw_columns=raw))
    parts.append(
        '<p class="note">Decoded prototype: the conditional decoder fed the prototype (scaled to the mean latent norm '
        "of its stratum) as latent and a one-hot assignment to its stratum.</p>"
    )

    if latent_map_uri:
        parts.append('<h2 id="latent-map">Latent space</h2>')
        parts.append(f'<img src="{escape(latent_map_uri)}" alt="2D map of the latent space" width="640">')

    if overlay_uris:
        parts.append('<h2 id="pixel-clusters">Pixel clusters</h2>')
        parts.append(
            '<p class="note">Each image beside its pixel cluster map from the local branch (one colour per cluster, '
            "the same in every image); cluster_maps.npy has the maps of every image.</p>"
        )
        parts.append(
            '<div class="cards" id="cluster-overlays">'
            + "".join(f"<figure>{_img(uri, caption, 232)}<figcaption>{escape(caption)}</figcaption></figure>"
                      for caption, uri in overlay_uris)
            + "</div>"
        )

    parts.append('<h2 id="outliers">Outliers</h2>')
    source = {
        "fixed": "a fixed threshold",
        "reference": f"percentile {outlier['percentile']:g} of the reference (training) images",
        "cohort": f"percentile {outlier['percentile']:g} of this cohort",
    }[outlier["source"]]
    parts.append(
        f"<p>An image is an outlier when its cosine similarity to the nearest prototype is below "
        f"<b>{outlier['threshold']:.3f}</b> ({escape(source)}): <b>{outlier['n_outliers']}</b> images.</p>"
    )

    patients = report["patients"]
    changed = [p for p in patients if p["stratum_changed"]]
    columns = ["patient_id", "n_images", "n_studies", "study_strata", "majority_stratum", "confidence",
               "mean_probability", "stratum_changed", "n_outliers"]
    parts.append(f'<h2 id="changed">Patients whose stratum changed between studies ({len(changed)})</h2>')
    if changed:
        parts.append(_table(columns, [[p[c] for c in columns] for p in changed[:MAX_PATIENT_ROWS]]))
    parts.append(f'<h2 id="patients">Patients ({len(patients)})</h2>')
    parts.append(
        '<p class="note">study_strata lists each study as date:stratum in time order; confidence is the share of '
        "the patient's images in the majority stratum.</p>"
    )
    parts.append(_table(columns, [[p[c] for c in columns] for p in patients[:MAX_PATIENT_ROWS]]))
    if len(patients) > MAX_PATIENT_ROWS:
        parts.append(f'<p class="note">First {MAX_PATIENT_ROWS} patients; every one is in strata_per_patient.csv.</p>')

    parts.append(f'<h2 id="skipped">Skipped files ({counts["skipped"]})</h2>')
    reasons = sorted(counts["skipped_by_reason"].items(), key=lambda item: -item[1])
    parts.append(_table(["reason", "files", "meaning"], [[r, n, SKIP_REASONS.get(r, "")] for r, n in reasons]))
    parts.append('<p class="note">Every skipped file, with the specific cause, is listed in skipped.csv.</p>')
    parts.append("</body></html>")
    return "\n".join(parts)
