"""Active learning: the least typical image first, so experts review outliers and candidate new strata."""

from __future__ import annotations

import logging
from typing import Any

from monailabel.interfaces.datastore import Datastore
from monailabel.interfaces.tasks.strategy import Strategy

from monai_cae.data import UnusableImageError

from ..bundle_model import BundleStrata, ImageNotFoundError

__all__ = ["LeastTypical"]

logger = logging.getLogger(__name__)


class LeastTypical(Strategy):
    """Offer the unlabeled image least similar to every prototype.

    Images not offered yet by this strategy come first, the least typical of them first; once every image has been
    offered, the one offered longest ago comes back. Images the cohort pipeline cannot read are passed over (and
    logged). Scores are cached per file and model, so only new or changed images are read again.

    Args:
        model: the bundle's model.
    """

    def __init__(self, model: BundleStrata) -> None:
        super().__init__("Least typical image first: lowest similarity to the nearest prototype (outliers, new strata)")
        self.model = model

    def __call__(self, request: dict[str, Any], datastore: Datastore) -> dict[str, Any] | None:
        """Pick the next image.

        Args:
            request: MONAI Label's request (``strategy``, optional ``label_tag`` and ``labels``).
            datastore: the app's datastore.

        Returns:
            ``{"id", "stratum", "similarity", "outlier"}`` of the chosen image, or ``None`` when no image is left.
        """
        name = request.get("strategy", "least_typical")
        candidates = []
        for image_id in datastore.get_unlabeled_images(request.get("label_tag"), request.get("labels")):
            try:
                strata = self.model.assign(datastore.get_image_uri(image_id))
            except (UnusableImageError, ImageNotFoundError) as e:
                logger.warning("least typical: %s passed over (%s)", image_id, e)
                continue
            offered = datastore.get_image_info(image_id).get("strategy", {}).get(name, {}).get("ts", 0)
            candidates.append((offered, strata.similarity, image_id, strata))
        if not candidates:
            return None
        _, similarity, image_id, strata = min(candidates, key=lambda c: c[:3])
        logger.info("least typical: %s (similarity %.3f of %d candidates)", image_id, similarity, len(candidates))
        return {"id": image_id, "stratum": strata.stratum, "similarity": similarity, "outlier": strata.outlier,
                "candidates": len(candidates)}
