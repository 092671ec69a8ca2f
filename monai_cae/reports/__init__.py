"""Per-patient strata reports of image archives: tables, figures, a self-contained HTML page."""

from __future__ import annotations

from .duplicates import DigestingLoader, image_digest
from .explain import (
    MAKEUP_FIELDS,
    ReportTally,
    dominant_values,
    makeup_value,
    outlier_gallery,
    report_content,
    strata_makeup,
    stratum_examples,
)
from .figures import data_uri, decode_prototypes, image_png, latent_map_png, stratum_latent_norms
from .html import PatientTables, render_report_html
from .options import ReportOptions
from .overlays import cluster_overlay_png, cluster_overlays, write_cluster_overlays
from .tables import (
    OUTLIER_SOURCES,
    PATIENT_COLUMNS,
    OutlierThreshold,
    image_columns,
    image_rows,
    nearest_similarity,
    outlier_threshold,
    patient_rows,
    reference_similarities,
    stratum_transitions,
    training_outlier_threshold,
    vote,
)
from monai_cae.utils.io import publish_folder

from .staging import NoImagesError, ReportStaging, check_output_dir, raise_without_images
from .writer import REPORT_FILES, build_report, write_report
from .pipeline import generate_report
from .strata_names import STRATA_NAMES_FILE, read_stratum_names, strata_names_path, write_stratum_names

__all__ = [
    "DigestingLoader",
    "image_digest",
    "MAKEUP_FIELDS",
    "OUTLIER_SOURCES",
    "PATIENT_COLUMNS",
    "REPORT_FILES",
    "STRATA_NAMES_FILE",
    "NoImagesError",
    "OutlierThreshold",
    "PatientTables",
    "ReportOptions",
    "ReportStaging",
    "ReportTally",
    "build_report",
    "check_output_dir",
    "cluster_overlay_png",
    "cluster_overlays",
    "data_uri",
    "decode_prototypes",
    "dominant_values",
    "generate_report",
    "image_columns",
    "training_outlier_threshold",
    "image_png",
    "image_rows",
    "latent_map_png",
    "makeup_value",
    "nearest_similarity",
    "outlier_gallery",
    "outlier_threshold",
    "patient_rows",
    "publish_folder",
    "raise_without_images",
    "read_stratum_names",
    "reference_similarities",
    "render_report_html",
    "report_content",
    "strata_makeup",
    "strata_names_path",
    "stratum_examples",
    "stratum_latent_norms",
    "stratum_transitions",
    "vote",
    "write_cluster_overlays",
    "write_report",
    "write_stratum_names",
]
