"""The bundle's trained model behind the app: one radiograph in, its stratum, scores and outlier flag out.

It reads ``configs/inference.json`` of the bundle, builds the network there (``load_model``) and loads images with
the cohort pipeline's readers (:func:`~monai_cae.data.probe_file`, :class:`~monai_cae.data.CohortDataset`), so an
image gets the same stratum here as in ``monai-cae-report``. The model is loaded again whenever ``model.pt``
changes (after a train task), and results are cached per file and model.
"""

from __future__ import annotations

import base64
import logging
import os
import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np
from monai.bundle import ConfigParser

from monai_cae.data import CohortDataLoader, CohortDataset, ManifestEntry, UnusableImageError, cohort_transform
from monai_cae.data import probe_file, scan_archive
from monai_cae.data.manifest import SELECTED
from monai_cae.networks.nets import ContrastiveAutoEncoder
from monai_cae.reports import assign_cohort, decode_prototypes, image_png, outlier_threshold, reference_similarities
from monai_cae.reports import stratum_latent_norms

__all__ = ["OPTIONS", "BundleStrata", "ImageNotFoundError", "ImageStrata", "ModelNotReadyError", "radiograph_entries"]

logger = logging.getLogger(__name__)

OPTIONS = {
    "ckpt_path": str,
    "reference_embeddings": str,
    "outlier_threshold": float,
    "outlier_percentile": float,
    "device": str,
}
"""Keys of ``inference.json`` that the app's ``--conf`` may override, with their types."""


class ImageNotFoundError(FileNotFoundError):
    """The requested image is neither in the datastore nor a file on the server."""


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
    """

    stratum: int
    probabilities: np.ndarray
    similarities: np.ndarray
    outlier: bool | None
    threshold: float | None
    threshold_source: str

    @property
    def similarity(self) -> float:
        """Cosine similarity to the nearest prototype (low: the image is far from every stratum)."""
        return float(self.similarities[self.stratum])


@dataclass
class _Loaded:
    stamp: tuple[int, int]
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


def radiograph_entries(path: str, modalities: Sequence[str] | None) -> list[ManifestEntry]:
    """The cohort pipeline's description of what a datastore hands over for one image.

    Args:
        path: a file, or a folder holding a series (a DICOMweb datastore hands a series over as a folder of
            instances).
        modalities: accepted DICOM modalities (see :func:`~monai_cae.data.scan_archive`).

    Returns:
        The folder's entries, or the file's one entry; selected or skipped with a reason.
    """
    if os.path.isdir(path):
        return scan_archive(path, modalities, progress=False)
    return [probe_file(path, modalities=modalities)]


class BundleStrata:
    """The trained model of a ``cae`` bundle, assigning single radiographs (or one-image series folders) to strata.

    Args:
        bundle_path: the bundle folder (holding ``configs/inference.json`` and ``models/model.pt``).
        options: overrides of :data:`OPTIONS` keys of ``inference.json`` (strings are converted; other keys are
            ignored). ``reference_embeddings`` defaults to the training run's ``runs/train/prototypes/embeddings.npy``
            when that file exists, which calibrates the outlier flag (``outlier_percentile`` of the training images).
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
        for key, value in _typed_options(options or {}).items():
            self.parser[key] = value
        self.ckpt_path = os.path.abspath(self.parser.get_parsed_content("ckpt_path"))
        self.img_size = self.parser.get_parsed_content("img_size")
        self.modalities = self.parser.get_parsed_content("modalities")
        self.device = self.parser.get_parsed_content("device")
        self.fixed_threshold = self.parser.get_parsed_content("outlier_threshold")
        self.percentile = float(self.parser.get_parsed_content("outlier_percentile"))
        reference = self.parser.get_parsed_content("reference_embeddings")
        self.reference_embeddings = reference or os.path.join(
            self.bundle_path, "runs", "train", "prototypes", "embeddings.npy"
        )
        self._transform = cohort_transform(self.img_size)
        self._lock = threading.Lock()
        self._loaded: _Loaded | None = None
        self._cache: dict[tuple, ImageStrata] = {}

    def _load(self, stamp: tuple[int, int]) -> _Loaded:
        try:
            # lazy=False: a new network every time, as the checkpoint may hold another number of prototypes
            network = self.parser.get_parsed_content("network", lazy=False)
        except Exception as e:  # the config wraps load_model's error in its own
            cause = e.__cause__ or e
            raise ModelNotReadyError(f"cannot load the model {self.ckpt_path}: {cause}") from e
        prototypes = network.prototypes.detach().float().cpu().numpy()
        reference = None
        if os.path.isfile(self.reference_embeddings):
            reference = np.load(self.reference_embeddings)
        elif self.fixed_threshold is None:
            logger.warning(
                "no reference embeddings at %s and no outlier_threshold: the outlier flag is off (train the bundle "
                "or pass --conf outlier_threshold VALUE).", self.reference_embeddings,
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
        logger.info("loaded %s: %d strata, outlier threshold %s (%s)", self.ckpt_path, k, threshold, source)
        return _Loaded(stamp, network, threshold, source, pngs)

    def current(self) -> _Loaded:
        """The loaded model, loaded again when the checkpoint changed since.

        Raises:
            ModelNotReadyError: when there is no usable checkpoint.
        """
        stamp = _stamp(self.ckpt_path)
        if stamp is None:
            raise ModelNotReadyError(
                f"no trained model at {self.ckpt_path}: train the bundle first (MONAI Label: POST /train/cae)."
            )
        with self._lock:
            if self._loaded is None or self._loaded.stamp != stamp:
                self._loaded = self._load(stamp)
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
        entries = radiograph_entries(path, self.modalities)
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
            ImageNotFoundError: when ``path`` does not exist.
            UnusableImageError: for a file the cohort pipeline skips (its reason code and detail).
            ModelNotReadyError: before training.
        """
        if not path or not os.path.exists(path):
            raise ImageNotFoundError(f"no image at {path!r}.")
        model = self.current()
        key = (os.path.abspath(path), _stamp(path), model.stamp)
        if key in self._cache:
            return self._cache[key]
        dataset = CohortDataset([self._entry(path)], self.img_size, transform=self._transform)
        loader = CohortDataLoader(dataset, batch_size=1)
        with self._lock:  # one forward pass at a time: infer and active learning share the network
            result = assign_cohort(model.network, loader, self.device, progress=False)
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
        )
        self._cache[key] = strata
        return strata
