"""Infer task: the stratum of the image on screen, how sure the model is, what the stratum's prototype looks like."""

from __future__ import annotations

import logging
import time
from typing import Any

from monailabel.interfaces.tasks.infer_v2 import InferTask, InferType

from ..bundle_model import BundleStrata, ImageNotFoundError

__all__ = ["StrataInfer", "stratum_name"]

logger = logging.getLogger(__name__)


def stratum_name(stratum: int) -> str:
    """The label a viewer shows for a stratum."""
    return f"stratum {stratum}"


class StrataInfer(InferTask):
    """A CLASSIFICATION infer task over the bundle's trained model.

    The result (the ``params`` JSON of ``POST /infer/<model>?image=<id>``; there is no label image) holds
    ``prediction`` (the stratum's name), ``stratum``, ``scores`` (soft assignment per stratum name), ``similarity``
    (cosine similarity to the nearest prototype), ``similarities`` (per stratum), ``outlier`` with
    ``outlier_threshold`` and ``outlier_source``, ``model_version`` (the bundle's model version that answered:
    ``bundle`` or a version trained from MONAI Label, see :mod:`lib.versions`), and, unless the request says
    ``"prototype_image": false``, ``prototype_png``: the stratum's prototype as a base64 PNG.

    Args:
        model: the bundle's model.
    """

    def __init__(self, model: BundleStrata) -> None:
        # the type is given explicitly: MONAI Label otherwise guesses it from the folder name, or says segmentation
        super().__init__(
            type=InferType.CLASSIFICATION,
            labels=None,
            dimension=2,
            description="Stratum of a chest radiograph (contrastive autoencoder prototypes), with scores, the "
            "similarity to the nearest prototype, an outlier flag and the prototype image",
            config={"prototype_image": True},
        )
        self.model = model

    def is_valid(self) -> bool:
        """Always listed: before training, a request gets an error that says to train first."""
        return True

    def info(self) -> dict[str, Any]:
        """MONAI Label's task info, with the current model's strata as labels."""
        self.labels = {stratum_name(j): j for j in range(self.model.num_strata)}
        return super().info()

    def __call__(self, request: dict[str, Any]) -> tuple[None, dict[str, Any]]:
        """Assign the request's image.

        Args:
            request: MONAI Label's infer request; ``image`` is the file or series folder the datastore resolved
                (the app resolves every id itself), ``image_id`` the identifier the client asked for.

        Returns:
            ``(None, result)``: no label file, the result JSON.

        Raises:
            ImageNotFoundError: when the image is not there.
            UnusableImageError: for an image the cohort pipeline skips.
            ModelNotReadyError: before training.
        """
        start = time.perf_counter()
        image_id = request.get("image_id", request.get("image"))
        path = request.get("image")
        if not isinstance(path, str) or not path:
            raise ImageNotFoundError(f"image {image_id!r} is not in the datastore.")
        strata = self.model.assign(path)
        names = [stratum_name(j) for j in range(len(strata.probabilities))]
        result: dict[str, Any] = {
            "image": image_id,
            "prediction": names[strata.stratum],
            "stratum": strata.stratum,
            "scores": {name: float(p) for name, p in zip(names, strata.probabilities)},
            "similarity": strata.similarity,
            "similarities": {name: float(s) for name, s in zip(names, strata.similarities)},
            "outlier": strata.outlier,
            "outlier_threshold": strata.threshold,
            "outlier_source": strata.threshold_source,
            "model_version": strata.model_version,
        }
        if str(request.get("prototype_image", True)).lower() not in ("false", "0"):
            result["prototype_png"] = self.model.prototype_png(strata.stratum)
        result["latency_ms"] = (time.perf_counter() - start) * 1000.0
        logger.info("%s: %s, similarity %.3f, outlier %s", image_id, result["prediction"], strata.similarity,
                    strata.outlier)
        return None, result
