"""A cohort of radiographs from an archive manifest (DICOM, NIfTI, PNG/JPEG, ITK formats), loaded lazily."""

from __future__ import annotations

import contextlib
import logging
import os
import warnings
from collections.abc import Callable, Hashable, Iterator, Mapping, Sequence

import numpy as np
import torch
from monai.config import KeysCollection
from monai.data import DataLoader, Dataset, PersistentDataset, set_track_meta
from monai.data.utils import worker_init_fn
from monai.transforms import (
    Compose,
    EnsureTyped,
    Lambdad,
    LoadImage,
    MapTransform,
    ResizeWithPadOrCropd,
    Resized,
    ScaleIntensityRangePercentilesd,
)
from monai.utils import ensure_tuple_rep
from torch.utils.data import default_collate

from .dicom import DicomRadiographReader, is_dicom_file
from .manifest import NIFTI_EXTENSIONS, SELECTED, ManifestEntry, ManifestStore, read_image_shape
from .unusable import DEFAULT_MAX_PIXELS, UnusableImageError, check_image_size, validate_max_pixels
from .workers import default_num_workers, validate_num_workers

__all__ = [
    "CohortDataLoader",
    "CohortDataset",
    "LoadRadiographd",
    "PREPROCESSING",
    "cohort_collate",
    "cohort_transform",
    "file_format",
]

PREPROCESSING = {
    "grey": "mean of the colour channels, alpha dropped",
    "resize": "longest side to img_size (area interpolation), aspect kept, zero padding",
    "intensity": "0.5th-99.5th percentile of each image to [0, 1], clipped",
}
"""The model-input steps of :func:`cohort_transform`, recorded with a trained model (``model.json``)."""


def file_format(path: str) -> str:
    """The loader a file needs: ``"dicom"`` by content (whatever its name), ``"nifti"`` by extension, else ``"image"``.

    Args:
        path: the file.

    Returns:
        ``"dicom"``, ``"nifti"`` or ``"image"``.

    Raises:
        OSError: when the file cannot be read.
    """
    if path.lower().endswith(NIFTI_EXTENSIONS):
        return "nifti"
    return "dicom" if is_dicom_file(path) else "image"


@contextlib.contextmanager
def _quiet_monai_readers() -> Iterator[None]:
    # LoadImage instantiates every MONAI reader, and the GPU DICOM one warns when nvImageCodec is missing; DICOM
    # never goes through MONAI's DICOM readers here, so the warning would only mislead
    plugin_logger = logging.getLogger("monai.data.nvimgcodec_pydicom_plugin")
    level = plugin_logger.level
    plugin_logger.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=".*nvImageCodec.*")
            yield
    finally:
        plugin_logger.setLevel(level)


class LoadRadiographd(MapTransform):
    """Load a 2D radiograph of any supported format as a ``(1, H, W)`` image, rows first, larger values brighter.

    DICOM goes through :class:`~monai_cae.data.dicom.DicomRadiographReader` (LUTs, MONOCHROME1, colour, every
    installed codec); other formats through MONAI's ``LoadImage`` readers (PIL for PNG/JPEG/BMP/TIFF, nibabel for
    NIfTI, ITK for MHA/NRRD when installed). NIfTI stores x (columns) first and is transposed to rows first. Colour
    stays in channels, for the grey conversion that follows in :func:`cohort_transform`.

    Args:
        keys: key of the file path.
        format_key: key of the format (``"dicom"``, ``"nifti"`` or ``"image"``), as in the manifest; detected with
            :func:`file_format` when the item has none.
        apply_voi: apply DICOM VOI LUTs / windows.
        max_pixels: the largest image accepted; the size a file declares is checked before it is decoded.

    Raises:
        UnusableImageError: ``"too_large"`` for an image declaring more than ``max_pixels`` pixels, ``"volume_3d"``
            for more than two non-singleton spatial axes, ``"non_finite"`` for a NaN or infinite value,
            ``"constant_image"`` when every pixel has the same value, and whatever
            :func:`~monai_cae.data.dicom.decode_dicom` raises.
        ValueError: for a ``max_pixels`` below 1 (on construction).
    """

    def __init__(
        self,
        keys: KeysCollection = "image",
        format_key: str = "format",
        apply_voi: bool = True,
        max_pixels: int = DEFAULT_MAX_PIXELS,
    ) -> None:
        super().__init__(keys)
        self.format_key = format_key
        self.max_pixels = validate_max_pixels(max_pixels)
        self.dicom_reader = DicomRadiographReader(apply_voi, self.max_pixels)
        with _quiet_monai_readers():
            self.loader = LoadImage(image_only=True, ensure_channel_first=True)
            # rows first for PIL and ITK, like the project's image folders; nibabel refuses the option
            self.rows_first_loader = LoadImage(image_only=True, ensure_channel_first=True, reverse_indexing=False)

    def _load(self, path: str, file_format: str) -> torch.Tensor:
        if file_format == "dicom":
            image = self.loader(path, reader=self.dicom_reader)
        else:
            # again at loading: the file may have been replaced since the scan
            check_image_size(read_image_shape(path)[1], self.max_pixels, "the header")
            image = (self.loader if file_format == "nifti" else self.rows_first_loader)(path)
        spatial = list(image.shape[1:])
        # 2D NIfTI / TIFF often carry trailing singleton axes
        while len(spatial) > 2 and spatial[-1] == 1:
            image, spatial = image[..., 0], spatial[:-1]
        if len(spatial) != 2:
            raise UnusableImageError("volume_3d", f"image of spatial shape {tuple(spatial)} where 2D is expected")
        if file_format == "nifti":
            image = image.transpose(1, 2)
        image = image.to(torch.float32)
        if image.numel() == 0:
            raise UnusableImageError("empty_image", f"zero-sized image ({tuple(spatial)})")
        # numpy on the plain data: torch reductions through MetaTensor cost ms per full-size radiograph
        pixels = np.asarray(image.as_tensor() if hasattr(image, "as_tensor") else image)
        low, high = float(pixels.min()), float(pixels.max())
        # a NaN makes min and max NaN, an inf is one of them: no second pass over the pixels; caught here, one image
        # is refused instead of a PCA or a loss failing for the whole run
        if not np.isfinite([low, high]).all():
            raise UnusableImageError("non_finite", f"non-finite pixel values (minimum {low:g}, maximum {high:g})")
        if low == high:
            raise UnusableImageError("constant_image", f"every pixel equals {low:g}")
        return image

    def __call__(self, data: Mapping[Hashable, object]) -> dict[Hashable, object]:
        d = dict(data)
        for key in self.key_iterator(d):
            path = os.fspath(d[key])
            d[key] = self._load(path, str(d.get(self.format_key) or file_format(path)))
        return d


def _to_grey(image: torch.Tensor) -> torch.Tensor:
    # RGB(A) photographs of films and screenshots: average the colour channels, drop alpha
    return image[:3].mean(0, keepdim=True) if image.shape[0] in (3, 4) else image[:1]


def cohort_transform(
    img_size: Sequence[int] | int = 28,
    apply_voi: bool = True,
    keys: str = "image",
    max_pixels: int = DEFAULT_MAX_PIXELS,
) -> Compose:
    """Load a 2D radiograph of any supported format and bring it to the model's input (:data:`PREPROCESSING`).

    Grey, channel-first, the longest side resized to ``img_size`` and the other padded with zeros, intensities mapped
    from the 0.5th-99.5th percentiles to [0, 1] and clipped (robust to burnt-in text and outlier pixels). Training
    from an archive, the report, bundle inference and the MONAI Label app all load images through this one
    pipeline, so an image is seen identically everywhere.

    Args:
        img_size: model input size.
        apply_voi: apply DICOM VOI LUTs / windows.
        keys: key holding the file path (and ``"format"`` beside it, detected when absent).
        max_pixels: the largest image accepted, checked before decoding
            (:data:`~monai_cae.data.unusable.DEFAULT_MAX_PIXELS` by default).

    Returns:
        A MONAI ``Compose`` over ``{keys: path, "format": ...}`` dictionaries.
    """
    size = ensure_tuple_rep(img_size, 2)
    return Compose(
        [
            LoadRadiographd(keys, apply_voi=apply_voi, max_pixels=max_pixels),
            Lambdad(keys, _to_grey),
            Resized(keys, spatial_size=max(size), size_mode="longest", mode="area"),
            ResizeWithPadOrCropd(keys, spatial_size=size),
            ScaleIntensityRangePercentilesd(keys, lower=0.5, upper=99.5, b_min=0.0, b_max=1.0, clip=True),
            EnsureTyped(keys, dtype=torch.float32, track_meta=False),
        ]
    )


def _explain(error: BaseException) -> tuple[str, str]:
    # MONAI's Compose wraps a transform's exception in RuntimeError: find the cause that names the reason
    seen: BaseException | None = error
    while seen is not None:
        if isinstance(seen, UnusableImageError):
            return seen.reason, seen.detail
        seen = seen.__cause__ or seen.__context__
    innermost = error
    while innermost.__cause__ is not None or innermost.__context__ is not None:
        innermost = innermost.__cause__ or innermost.__context__
    if isinstance(innermost, (PermissionError, FileNotFoundError, IsADirectoryError)):
        return "unreadable", f"{type(innermost).__name__}: {innermost}"
    message = str(innermost).strip().splitlines()[0] if str(innermost).strip() else ""
    return "corrupt", f"cannot be loaded ({type(innermost).__name__}: {message})"


class _LoadingItems(Sequence[dict]):
    """What the loading transform reads of each entry, made when it is asked for. With ``file_state``, each file's
    size and modification time (the cache key) is taken once, here: a cached image is then served even when its file
    has gone since (the only list as long as the archive, and only with a cache)."""

    def __init__(self, entries: Sequence[ManifestEntry], file_state: bool) -> None:
        self.entries = entries
        self.states = [_file_state(e.path) for e in entries] if file_state else None

    def __len__(self) -> int:
        return len(self.entries)

    def __getitem__(self, index: int) -> dict:  # type: ignore[override]
        entry = self.entries[index]
        item = {"image": entry.path, "format": entry.format}
        if self.states is not None:
            item["file_state"] = self.states[index]
        return item


def _file_state(path: str) -> str:
    st = os.stat(path)
    return f"{st.st_size}-{st.st_mtime_ns}"


class CohortDataset(torch.utils.data.Dataset):
    """The selected images of an archive manifest, loaded and preprocessed one at a time.

    :attr:`manifest` keeps every entry given, :attr:`entries` the selected ones. Items are
    ``{"image", "index", "id", "label", "ok", "reason", "detail"}``: ``index`` is the position in
    :attr:`entries`, ``id`` the entry's image id, ``label`` is ``-1``. An image that fails to load does not stop
    anything: its item has ``ok`` false, a reason code and a detail, and no image; :class:`CohortDataLoader` drops it
    and records why. Nothing is held in memory but the file list (not even that with a
    :class:`~monai_cae.data.ManifestStore`).

    Args:
        entries: manifest entries (e.g. from :func:`~monai_cae.data.scan_archive`); only those with status
            ``"selected"`` are loaded. A :class:`~monai_cae.data.ManifestStore` is read from its file, one entry at a
            time, and its selected entries are those it numbered.
        img_size: model input size.
        cache_dir: optional folder for a ``monai.data.PersistentDataset`` cache of preprocessed images, keyed by
            path, size and modification time (a changed file is decoded again) and by ``img_size``.
        transform: loading transform; :func:`cohort_transform` when omitted.
        max_pixels: the largest image accepted by that default transform.
    """

    def __init__(
        self,
        entries: Sequence[ManifestEntry],
        img_size: Sequence[int] | int = 28,
        cache_dir: str | None = None,
        transform: Callable | None = None,
        max_pixels: int = DEFAULT_MAX_PIXELS,
    ) -> None:
        if isinstance(entries, ManifestStore):
            self.manifest: Sequence[ManifestEntry] = entries
            self.entries: Sequence[ManifestEntry] = entries.selected()
        else:
            self.manifest = list(entries)
            self.entries = [e for e in self.manifest if e.status == SELECTED]
        transform = transform or cohort_transform(img_size, max_pixels=max_pixels)
        items = _LoadingItems(self.entries, file_state=bool(cache_dir))
        if cache_dir:
            size = "x".join(str(s) for s in ensure_tuple_rep(img_size, 2))
            self.data: Dataset = PersistentDataset(items, transform, cache_dir=os.path.join(cache_dir, size))
        else:
            self.data = Dataset(items, transform)

    def __len__(self) -> int:
        return len(self.entries)

    def __getitem__(self, index: int) -> dict:
        entry = self.entries[index]
        item = {"index": index, "id": entry.image_id, "label": np.int64(-1)}
        try:
            loaded = self.data[index]
        except Exception as e:  # any failure is one skipped image, explained, never the end of the run
            reason, detail = _explain(e)
            return {**item, "image": None, "ok": False, "reason": reason, "detail": detail}
        return {**item, "image": loaded["image"], "ok": True, "reason": "", "detail": ""}


def cohort_collate(batch: Sequence[dict]) -> dict:
    """Collate the loaded items of a batch; failed ones go, with their reason, under ``"skipped"``.

    Args:
        batch: items of :class:`CohortDataset`; items of other datasets (no ``"ok"`` key) count as loaded.

    Returns:
        The collated loaded items (without ``ok``, ``reason``, ``detail``) plus ``"skipped"``, the list of
        ``(index, reason, detail)`` of the failed ones; only ``"skipped"`` when no item loaded.
    """
    status_keys = ("ok", "reason", "detail")
    loaded = [{k: v for k, v in b.items() if k not in status_keys} for b in batch if b.get("ok", True)]
    skipped = [(int(b["index"]), b["reason"], b["detail"]) for b in batch if not b.get("ok", True)]
    return {**(default_collate(loaded) if loaded else {}), "skipped": skipped}


def _decoding_worker_init(worker_id: int) -> None:
    # the model input keeps no metadata (cohort_transform drops it last), and the MetaTensor bookkeeping of every step
    # before costs about a tenth of the decoding; the flag is global, so it is turned off only in a worker's own process
    worker_init_fn(worker_id)
    set_track_meta(False)


class CohortDataLoader(DataLoader):
    """A non-shuffling MONAI ``DataLoader`` over a :class:`CohortDataset` that streams only the loaded images.

    Batches that reach the model hold only images that loaded; every failure is appended to :attr:`skipped` as
    ``(index, reason, detail)``. Batches of other datasets pass through unchanged. Its worker processes track no
    MONAI metadata (``monai.data.set_track_meta(False)``, in their own process only): a cohort item is a plain tensor
    whatever the flag, and the bookkeeping costs time on every image.

    Args:
        dataset: the cohort.
        batch_size: images per batch.
        num_workers: loader processes (decoding is the expensive part and parallelises across them);
            :func:`default_num_workers` when ``None``.
        kwargs: other ``DataLoader`` arguments (a ``worker_init_fn`` given here replaces MONAI's seeding and the
            metadata switch).

    Raises:
        ValueError: for a negative ``num_workers``.
    """

    def __init__(
        self, dataset: torch.utils.data.Dataset, batch_size: int = 64, num_workers: int | None = None, **kwargs
    ) -> None:
        if validate_num_workers(num_workers) is None:
            num_workers = default_num_workers(-(-len(dataset) // batch_size))
        kwargs.setdefault("collate_fn", cohort_collate)
        kwargs.setdefault("worker_init_fn", _decoding_worker_init)
        super().__init__(dataset, batch_size=batch_size, shuffle=False, num_workers=num_workers, **kwargs)
        self.skipped: list[tuple[int, str, str]] = []

    def __iter__(self) -> Iterator[dict]:
        self.skipped = []
        for batch in super().__iter__():
            if isinstance(batch, dict) and "skipped" in batch:
                self.skipped.extend(batch.pop("skipped"))
                if "image" not in batch:
                    continue
            yield batch
