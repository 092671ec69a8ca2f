"""The bundle's trained model behind the app: one radiograph in, its stratum, scores and outlier flag out.

It reads ``configs/inference.json`` of the bundle, builds the network there (``load_model``) and loads images with
the cohort pipeline's readers (:func:`~monai_cae.data.probe_file`, :class:`~monai_cae.data.CohortDataset`), so an
image gets the same stratum here as in ``monai-cae-report``. The model is the bundle's current version
(:mod:`lib.versions`): every request looks the version up again, so the model trained by a train task is used from
the first request after it completed, with its own reference embeddings; results are cached per file and model.
"""

from __future__ import annotations

import base64
import logging
import os
import threading
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np
from monai.bundle import ConfigParser

from monai_cae.data import CohortDataLoader, CohortDataset, ManifestEntry, UnusableImageError, cohort_transform
from monai_cae.data import DEFAULT_MAX_PIXELS, probe_file, scan_archive
from monai_cae.data.manifest import SELECTED
from monai_cae.networks.nets import ContrastiveAutoEncoder
from monai_cae.engines import assign_strata
from monai_cae.reports import ReportOptions, decode_prototypes, image_png, outlier_threshold, reference_similarities
from monai_cae.reports import stratum_latent_norms

from .versions import ModelVersion, current_version, shipped_version

__all__ = ["OPTIONS", "BundleStrata", "ImageNotFoundError", "ImageStrata", "ModelNotReadyError", "radiograph_entries"]

logger = logging.getLogger(__name__)

OPTIONS = {
    "ckpt_path": str,
    "reference_embeddings": str,
    "outlier_threshold": float,
    "outlier_percentile": float,
    "device": str,
    "max_pixels": int,
}
"""Keys of ``inference.json`` that the app's ``--conf`` may override, with their types."""


class ImageNotFoundError(FileNotFoundError):
    """The requested image is not in the datastore."""


class ModelNotReadyError(RuntimeError):
    """The bundle has no trained model (with prototypes) yet."""


@dataclass
class ImageStrata:
    """The model's view of one radiograph.

    Attributes:
        stratum: index of the most similar prototype.
        probabilities: ``(K,)`` soft assignment to the prototypes.
        similarities: ``(K,)`` cosine similarity to each prototype.
        outlier: whether the similarity to the nearest prototype is below the outlier threshold; ``None`` when no
            threshold is known (no fixed one and no reference embeddings).
        threshold: that threshold, or ``None``.
        threshold_source: ``"fixed"``, ``"reference"`` or ``"none"``.
        model_version: the model's version (:attr:`~lib.versions.ModelVersion.name`).
    """

    stratum: int
    probabilities: np.ndarray
    similarities: np.ndarray
    outlier: bool | None
    threshold: float | None
    threshold_source: str
    model_version: str

    @property
    def similarity(self) -> float:
        """Cosine similarity to the nearest prototype (low: the image is far from every stratum)."""
        return float(self.similarities[self.stratum])


@dataclass
class _Loaded:
    stamp: tuple[str, int, int]
    version: ModelVersion
    img_size: int
    transform: Callable
    network: ContrastiveAutoEncoder
    threshold: float | None
    threshold_source: str
    prototype_pngs: list[str] = field(default_factory=list)


def _stamp(path: str) -> tuple[int, int] | None:
    try:
        st = os.stat(path)
    except OSError:
        return None
    return st.st_mtime_ns, st.st_size


def _typed_options(options: Mapping[str, object]) -> dict[str, object]:
    typed = {}
    for key, value in options.items():
        if key not in OPTIONS:
            continue
        try:
            typed[key] = OPTIONS[key](value)
        except (TypeError, ValueError) as e:
            raise ValueError(f"{key} must be a {OPTIONS[key].__name__}, got {value!r}.") from e
    return typed


def radiograph_entries(
    path: str, modalities: Sequence[str] | None, max_pixels: int = DEFAULT_MAX_PIXELS
) -> list[ManifestEntry]:
    """The cohort pipeline's description of what a datastore hands over for one image.

    Args:
        path: a file, or a folder holding a series (a DICOMweb datastore hands a series over as a folder of
            instances).
        modalities: accepted DICOM modalities (see :func:`~monai_cae.data.scan_archive`).
        max_pixels: the largest image accepted (larger ones are skipped as ``"too_large"`` before decoding).

    Returns:
        The folder's entries, or the file's one entry; selected or skipped with a reason.
    """
    if os.path.isdir(path):
        # no worker processes forked from a server's threads: a series holds a few instances
        return scan_archive(path, modalities, progress=False, max_pixels=max_pixels, num_workers=0)
    return [probe_file(path, modalities=modalities, max_pixels=max_pixels)]


class BundleStrata:
    """The trained model of a ``cae`` bundle, assigning single radiographs (or one-image series folders) to strata.

    Args:
        bundle_path: the bundle folder (holding ``configs/inference.json`` and ``models/model.pt``).
        options: overrides of :data:`OPTIONS` keys of ``inference.json`` (strings are converted; other keys are
            ignored). Without ``ckpt_path`` the model is the bundle's current version
            (:func:`~lib.versions.current_version`: the last one trained from MONAI Label, else
            ``models/model.pt``), and without
            ``reference_embeddings`` the outlier flag is calibrated on that version's training images
            (``outlier_percentile`` of their similarities), when its ``prototypes/embeddings.npy`` exists. A
            ``ckpt_path`` given pins the model (with the main run's reference embeddings unless given too).
        config_file: the inference config's file name.

    Raises:
        FileNotFoundError: when the bundle has no such config.
        ValueError: for an option that does not convert to its type.
    """

    def __init__(
        self, bundle_path: str, options: Mapping[str, object] | None = None, config_file: str = "inference.json"
    ) -> None:
        self.bundle_path = os.path.abspath(bundle_path)
        config_path = os.path.join(self.bundle_path, "configs", config_file)
        if not os.path.isfile(config_path):
            raise FileNotFoundError(
                f"no bundle config at {config_path}: pass --conf bundle_path <folder of the cae bundle>."
            )
        self.parser = ConfigParser()
        self.parser.read_config(config_path)
        self.parser["bundle_root"] = self.bundle_path
        typed = _typed_options(options or {})
        for key, value in typed.items():
            self.parser[key] = value
        self.pinned: ModelVersion | None = None
        if "ckpt_path" in typed:
            shipped = shipped_version(self.bundle_path)
            model = os.path.abspath(str(typed["ckpt_path"]))
            self.pinned = ModelVersion("ckpt_path", os.path.dirname(model), model, shipped.reference_embeddings)
        # the report pipeline's options: the app reads and assigns an image as a report does
        options: ReportOptions = self.parser.get_parsed_content("report_options")
        self.modalities, self.max_pixels, self.device = options.modalities, options.max_pixels, options.device
        self.fixed_threshold, self.percentile = options.outlier_threshold, float(options.outlier_percentile)
        self.fixed_reference = options.reference_embeddings
        self._lock = threading.Lock()
        self._loaded: _Loaded | None = None
        self._cache: dict[tuple, ImageStrata] = {}

    def version(self) -> ModelVersion:
        """The model to use now: the pinned one, else the bundle's current version, looked up again every time.

        Raises:
            ModelNotReadyError: when the version pointer cannot be read.
        """
        if self.pinned is not None:
            return self.pinned
        try:
            return current_version(self.bundle_path)
        except ValueError as e:
            raise ModelNotReadyError(str(e)) from e

    def _load(self, version: ModelVersion, stamp: tuple[str, int, int]) -> _Loaded:
        self.parser["ckpt_path"] = version.model
        try:
            # lazy=False: a new network every time, as the checkpoint may hold another number of prototypes, and
            # the input size again, from the new model's card
            network = self.parser.get_parsed_content("network", lazy=False)
            img_size = self.parser.get_parsed_content("img_size", lazy=False)
        except Exception as e:  # the config wraps load_model's error in its own
            cause = e.__cause__ or e
            raise ModelNotReadyError(f"cannot load the model {version.model}: {cause}") from e
        prototypes = network.prototypes.detach().float().cpu().numpy()
        reference_path = self.fixed_reference or version.reference_embeddings
        reference = None
        if os.path.isfile(reference_path):
            reference = np.load(reference_path)
        elif self.fixed_threshold is None:
            logger.warning(
                "no reference embeddings at %s and no outlier_threshold: the outlier flag is off (train the bundle "
                "or pass --conf outlier_threshold VALUE).", reference_path,
            )
        similarities = reference_similarities(reference, prototypes)
        if self.fixed_threshold is None and similarities is None:
            threshold, source = None, "none"
        else:
            chosen = outlier_threshold(np.zeros(0), self.fixed_threshold, self.percentile, similarities)
            threshold, source = chosen.value, chosen.source
        k = len(prototypes)
        norms = None
        if reference is not None:
            # prototypes are unit directions; decoded at the norm typical of their training images they look real
            unit = lambda x: x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)  # noqa: E731
            norms = stratum_latent_norms(reference, (unit(reference) @ unit(prototypes).T).argmax(1), k)
        decoded = decode_prototypes(network, self.device, norms)
        pngs = [base64.b64encode(image_png(image, scale=4)).decode("ascii") for image in decoded]
        logger.info("loaded %s (version %s): %d strata, outlier threshold %s (%s)", version.model, version.name, k,
                    threshold, source)
        return _Loaded(stamp, version, img_size, cohort_transform(img_size, max_pixels=self.max_pixels), network, threshold, source, pngs)

    def current(self) -> _Loaded:
        """The current version's model, loaded again when the version or its checkpoint changed since.

        Raises:
            ModelNotReadyError: when there is no usable checkpoint.
        """
        version = self.version()
        file_stamp = _stamp(version.model)
        if file_stamp is None:
            raise ModelNotReadyError(
                f"no trained model at {version.model}: train the bundle first (MONAI Label: POST /train/cae)."
            )
        stamp = (version.name, *file_stamp)
        with self._lock:
            if self._loaded is None or self._loaded.stamp != stamp:
                self._loaded = self._load(version, stamp)
                self._cache.clear()
            return self._loaded

    @property
    def num_strata(self) -> int:
        """Number of strata of the current model (0 before training)."""
        try:
            return self.current().network.num_prototypes
        except ModelNotReadyError:
            return 0

    def prototype_png(self, stratum: int) -> str:
        """Base64 PNG of a stratum's prototype, decoded by the conditional decoder.

        Raises:
            ValueError: for a stratum the model does not have.
        """
        pngs = self.current().prototype_pngs
        if not 0 <= stratum < len(pngs):
            raise ValueError(f"stratum must be in [0, {len(pngs) - 1}], got {stratum}.")
        return pngs[stratum]

    def _entry(self, path: str) -> ManifestEntry:
        entries = radiograph_entries(path, self.modalities, self.max_pixels)
        selected = [e for e in entries if e.status == SELECTED]
        if selected:
            if len(selected) > 1:
                logger.info("%s holds %d images; the first, %s, is assigned", path, len(selected), selected[0].image_id)
            return selected[0]
        if not entries:
            raise UnusableImageError("not_image", "empty folder")
        raise UnusableImageError(entries[0].reason, entries[0].detail)

    def assign(self, path: str) -> ImageStrata:
        """Stratum, scores and outlier flag of one image.

        Args:
            path: a DICOM, NIfTI or PNG/JPEG/TIFF file, or a folder holding one radiograph series.

        Returns:
            The assignment (cached while the file and the model stay the same).

        Raises:
            ImageNotFoundError: when ``path`` does not exist (any more).
            UnusableImageError: for a file the cohort pipeline skips (its reason code and detail).
            ModelNotReadyError: before training.
        """
        if not path or not os.path.exists(path):
            raise ImageNotFoundError(f"no image at {path!r}.")
        model = self.current()
        key = (os.path.abspath(path), _stamp(path), model.stamp)
        if key in self._cache:
            return self._cache[key]
        dataset = CohortDataset([self._entry(path)], model.img_size, transform=model.transform)
        loader = CohortDataLoader(dataset, batch_size=1)
        with self._lock:  # one forward pass at a time: infer and active learning share the network
            result = assign_strata(model.network, loader, self.device, progress=False)
        if not len(result.ids):
            _, reason, detail = loader.skipped[0]
            raise UnusableImageError(reason, detail.replace(path, "<file>"))
        similarity = float(result.nearest_similarity[0])
        strata = ImageStrata(
            stratum=int(result.clusters[0]),
            probabilities=result.probabilities[0],
            similarities=result.similarities[0],
            outlier=None if model.threshold is None else bool(similarity < model.threshold),
            threshold=model.threshold,
            threshold_source=model.threshold_source,
            model_version=model.version.name,
        )
        self._cache[key] = strata
        return strata
