"""MONAI Label app of monai_cae: which stratum is the radiograph on screen, how sure is the model, what does the
stratum's prototype look like, and which images are least typical. Training runs from the same place.

Start it with ``monai-cae-label start_server --studies STUDIES`` (a folder or a DICOMweb URL), or with MONAI Label's
own command: ``python -m monailabel.main start_server --app <this folder> --studies STUDIES --uvicorn_app
monai_cae.apps.monailabel.server:app``. Options: ``--conf bundle_path FOLDER`` (default: the checkout's
``bundles/cae``) and the inference options of ``lib/bundle_model.py`` (e.g. ``--conf outlier_threshold 0.3``).
"""

from __future__ import annotations

import logging
from typing import Any

from monai_cae.apps.monailabel.compat import patch_pydicom_seg

# MONAI Label's training runs load this file in a fresh interpreter; the fix must precede monailabel.interfaces
patch_pydicom_seg()

import lib.configs.cae  # noqa: E402  (MONAI Label puts the app folder on sys.path and imports lib from it)
from fastapi import HTTPException  # noqa: E402
from monailabel.config import settings  # noqa: E402
from monailabel.interfaces.app import MONAILabelApp  # noqa: E402
from monailabel.interfaces.datastore import Datastore  # noqa: E402
from monailabel.tasks.activelearning.random import Random  # noqa: E402

from monai_cae._version import __version__  # noqa: E402
from monai_cae.apps.monailabel import DEFAULT_BUNDLE_PATH  # noqa: E402
from monai_cae.data import UnusableImageError  # noqa: E402
from lib.bundle_model import ImageNotFoundError, ModelNotReadyError  # noqa: E402
from lib.datastore import StudiesDatastore  # noqa: E402

logger = logging.getLogger(__name__)

MODEL_NAME = "cae"
"""The name of the infer and train tasks (``/infer/cae``, ``/train/cae``)."""


class CAEApp(MONAILabelApp):
    """The app: the ``cae`` bundle's infer task (CLASSIFICATION), train task and least-typical-first strategy.

    Args:
        app_dir: this folder.
        studies: a studies folder or a DICOMweb URL.
        conf: ``--conf`` options; ``bundle_path`` defaults to :data:`~monai_cae.apps.monailabel.DEFAULT_BUNDLE_PATH`.
    """

    def __init__(self, app_dir: str, studies: str, conf: dict[str, str]) -> None:
        conf = {"bundle_path": DEFAULT_BUNDLE_PATH, **(conf or {})}
        self.task_config = lib.configs.cae.CAEConfig()
        self.task_config.init(MODEL_NAME, app_dir, conf, None)
        super().__init__(
            app_dir=app_dir,
            studies=studies,
            conf=conf,
            name="monai_cae",
            description="Unsupervised patient strata of chest X-rays (contrastive autoencoder prototypes)",
            version=__version__,
        )

    def init_datastore(self) -> Datastore:
        """A DICOMweb datastore for a URL; otherwise the studies folder with every image in its sub-folders."""
        if self.studies.startswith(("http://", "https://")):
            return super().init_datastore()
        return StudiesDatastore(
            self.studies,
            auto_reload=settings.MONAI_LABEL_DATASTORE_AUTO_RELOAD,
            read_only=settings.MONAI_LABEL_DATASTORE_READ_ONLY,
        )

    def init_infers(self) -> dict[str, Any]:
        """The CLASSIFICATION infer task."""
        return self.task_config.infer()

    def init_trainers(self) -> dict[str, Any]:
        """The bundle's train task."""
        return {MODEL_NAME: self.task_config.trainer()}

    def init_strategies(self) -> dict[str, Any]:
        """Least typical first, and MONAI Label's random strategy."""
        return {**self.task_config.strategy(), "random": Random()}

    def infer(self, request: dict[str, Any], datastore: Datastore | None = None) -> dict[str, Any]:
        """MONAI Label's infer on an image of the datastore, named by its id; failures answered as HTTP errors.

        The id is resolved here, by the datastore alone: MONAI Label would open any path that exists on the server
        (``/etc/passwd``, ``../``, a folder it then scans), and an uploaded file or a session arrives as such a path
        too. Anything that is not an image of the datastore is 404 with one message, whether a file of that name
        exists or not; an image the cohort pipeline cannot use is 422 with its reason code and detail; a bundle
        without trained model 409. The server keeps running.
        """
        image_id = request.get("image")
        store = datastore or self.datastore()
        path = store.get_image_uri(image_id) if isinstance(image_id, str) and image_id else ""
        not_found = HTTPException(status_code=404, detail=f"image {image_id!r} is not in the datastore.")
        if not path:
            raise not_found
        try:
            return super().infer({**request, "image": path, "image_id": image_id}, store)
        except ImageNotFoundError as e:  # gone since it was listed
            raise not_found from e
        except UnusableImageError as e:
            raise HTTPException(status_code=422, detail=f"image {image_id!r} is unusable: {e}") from e
        except ModelNotReadyError as e:
            raise HTTPException(status_code=409, detail=str(e)) from e

    def _download_dcmqi_tools(self) -> None:
        # dcmqi writes DICOM SEG, which a classification app never does; its download needs the internet
        return None
