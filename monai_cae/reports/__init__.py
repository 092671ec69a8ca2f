"""Per-patient strata reports of image archives: tables, figures, a self-contained HTML page."""

from __future__ import annotations

from .figures import data_uri, decode_prototypes, image_png, latent_map_png, stratum_latent_norms
from .html import render_report_html
from .overlays import cluster_overlay_png, cluster_overlays, write_cluster_overlays
from .tables import (
    PATIENT_COLUMNS,
    OutlierThreshold,
    image_columns,
    image_rows,
    nearest_similarity,
    outlier_threshold,
    patient_rows,
    reference_similarities,
)
from .writer import REPORT_FILES, NoImagesError, check_output_dir, publish_folder, write_report
from .pipeline import assign_cohort, generate_report

__all__ = [
    "PATIENT_COLUMNS",
    "REPORT_FILES",
    "NoImagesError",
    "OutlierThreshold",
    "assign_cohort",
    "check_output_dir",
    "cluster_overlay_png",
    "cluster_overlays",
    "data_uri",
    "decode_prototypes",
    "generate_report",
    "image_columns",
    "image_png",
    "image_rows",
    "latent_map_png",
    "nearest_similarity",
    "outlier_threshold",
    "patient_rows",
    "publish_folder",
    "reference_similarities",
    "render_report_html",
    "stratum_latent_norms",
    "write_cluster_overlays",
    "write_report",
]
