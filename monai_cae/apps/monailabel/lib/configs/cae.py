"""Task configuration of the app: one bundle, its infer task, train task and active-learning strategy."""

from __future__ import annotations

import logging
import os
from typing import Any

from monailabel.interfaces.config import TaskConfig
from monailabel.interfaces.tasks.infer_v2 import InferTask
from monailabel.interfaces.tasks.strategy import Strategy
from monailabel.interfaces.tasks.train import TrainTask

from ..activelearning.outliers import LeastTypical
from ..bundle_model import BundleStrata
from ..infers.strata import StrataInfer
from ..trainers.cae import CAETrain

__all__ = ["CAEConfig"]

logger = logging.getLogger(__name__)


class CAEConfig(TaskConfig):
    """The ``cae`` bundle's tasks.

    ``conf`` (``--conf KEY VALUE``) takes ``bundle_path`` (the bundle folder) and the inference options of
    :data:`~lib.bundle_model.OPTIONS` (``outlier_threshold``, ``outlier_percentile``, ``reference_embeddings``,
    ``ckpt_path``, ``device``, ``max_pixels``).
    """

    def init(self, name: str, model_dir: str, conf: dict[str, str], planner: Any, **kwargs: Any) -> None:
        """Locate the bundle and create the model shared by the tasks.

        Args:
            name: the model name in MONAI Label (the infer and train task's name).
            model_dir: the app's model folder (unused: the model versions live in the bundle).
            conf: the app's options; ``bundle_path`` is required.
            planner: unused.
            kwargs: unused.

        Raises:
            ValueError: when ``bundle_path`` is missing from ``conf``.
            FileNotFoundError: when it is not a bundle.
        """
        super().init(name, model_dir, conf, planner, **kwargs)
        if not conf.get("bundle_path"):
            raise ValueError("conf needs bundle_path, the folder of the cae bundle.")
        self.bundle_path = os.path.abspath(conf["bundle_path"])
        self.model = BundleStrata(self.bundle_path, conf)
        logger.info("bundle %s (its current model version is looked up at every request)", self.bundle_path)

    def infer(self) -> dict[str, InferTask]:
        """The CLASSIFICATION task, under the model's name."""
        return {self.name: StrataInfer(self.model)}

    def trainer(self) -> TrainTask:
        """The bundle's training workflow."""
        return CAETrain(self.bundle_path, self.conf)

    def strategy(self) -> dict[str, Strategy]:
        """Least typical image first."""
        return {"least_typical": LeastTypical(self.model)}
