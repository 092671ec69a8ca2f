from __future__ import annotations

from .array_dataset import ArrayImageDataset
from .image_folder import IMAGE_EXTENSIONS, ImageFolderDataset, preprocessing_transform
from .archive import ARCHIVE_SPLITS, ArchiveDataset, patient_key, split_patients
from .factory import has_labels, make_dataset
from .medmnist import MedMNISTDataset, load_medmnist
from .mnist import MNISTDataset, read_idx
from .privacy import pseudonymize
from .unusable import DEFAULT_MAX_PIXELS, SKIP_REASONS, UnusableImageError, check_image_size
from .dicom import (
    HEADER_FIELDS,
    RADIOGRAPH_MODALITIES,
    DicomRadiographReader,
    decode_dicom,
    dicom_image_problem,
    header_fields,
    is_dicom_file,
    read_dicom_header,
)
from .manifest import (
    MANIFEST_COLUMNS,
    ManifestEntry,
    ManifestStore,
    SelectedEntries,
    probe_file,
    read_image_shape,
    read_manifest,
    scan_archive,
    walk_archive_files,
    write_manifest,
)
from .cohort import (
    CohortDataLoader,
    CohortDataset,
    LoadRadiographd,
    PREPROCESSING,
    cohort_collate,
    cohort_transform,
    file_format,
)
from .workers import available_cpus, default_num_workers, threads_beside_workers, validate_num_workers

__all__ = [
    "IMAGE_EXTENSIONS",
    "ImageFolderDataset",
    "ARCHIVE_SPLITS",
    "ArchiveDataset",
    "patient_key",
    "split_patients",
    "has_labels",
    "preprocessing_transform",
    "ArrayImageDataset", "MNISTDataset", "MedMNISTDataset", "load_medmnist", "make_dataset", "read_idx",
    "pseudonymize",
    "DEFAULT_MAX_PIXELS",
    "SKIP_REASONS",
    "UnusableImageError",
    "check_image_size",
    "HEADER_FIELDS",
    "RADIOGRAPH_MODALITIES",
    "DicomRadiographReader",
    "decode_dicom",
    "dicom_image_problem",
    "header_fields",
    "is_dicom_file",
    "read_dicom_header",
    "MANIFEST_COLUMNS",
    "ManifestEntry",
    "ManifestStore",
    "SelectedEntries",
    "probe_file",
    "read_image_shape",
    "read_manifest",
    "scan_archive",
    "walk_archive_files",
    "write_manifest",
    "CohortDataLoader",
    "CohortDataset",
    "LoadRadiographd",
    "PREPROCESSING",
    "file_format",
    "cohort_collate",
    "cohort_transform",
    "available_cpus",
    "default_num_workers",
    "threads_beside_workers",
    "validate_num_workers",
]
