"""The studies folder as MONAI Label's datastore: every image below it, by datastore id, and nothing else.

MONAI Label's ``LocalDatastore`` lists the top folder only, by extension, and its infer task opens whatever path a
request names. Archives are nested (year, modality, patient folders), DICOM files often have no extension, and a
server must never read outside its studies. :class:`StudiesDatastore` lists with the cohort pipeline's walker
(report and staging folders left out), offers DICOM by content, and resolves ids only to regular files inside the
studies folder.
"""

from __future__ import annotations

import contextlib
import copy
import logging
import os
import stat
import time
from typing import Any

from fastapi import HTTPException
from monailabel.datastore.local import DataModel, ImageLabelModel, LocalDatastore

from monai_cae.data import is_dicom_file
from monai_cae.data.manifest import ITK_EXTENSIONS, NIFTI_EXTENSIONS, PIL_EXTENSIONS, display_text, list_archive_files

__all__ = ["IMAGE_EXTENSIONS", "StudiesDatastore", "datastore_id", "inside_file", "studies_index"]

logger = logging.getLogger(__name__)

IMAGE_EXTENSIONS = (".dcm", ".dicom", *NIFTI_EXTENSIONS, *PIL_EXTENSIONS, *ITK_EXTENSIONS)
"""Names offered whatever their content (a damaged one is answered 422 with its reason); any other file is offered
when its content is DICOM."""

_ARCHIVE = "the studies folder is an archive: the server neither adds nor removes its images"

# longest first, so that ".nii.gz" is taken away whole
_STRIPPED = sorted(IMAGE_EXTENSIONS, key=len, reverse=True)


def datastore_id(relative: str) -> str:
    """The datastore id of a file: its path below the studies folder, without image extension, as UTF-8 text.

    Args:
        relative: the path relative to the studies folder, as the file system gives it (undecodable bytes of a
            name as surrogate escapes).

    Returns:
        ``2021/DX/IM0001`` for ``2021/DX/IM0001``, ``2021/DX/a`` for ``2021/DX/a.dcm``; a byte that is not UTF-8 is
        written ``\\xNN`` (:func:`~monai_cae.data.manifest.display_text`), so that every id can be sent as JSON.
    """
    lower = relative.lower()
    for extension in _STRIPPED:
        if lower.endswith(extension) and len(relative) > len(extension):
            relative = relative[: -len(extension)]
            break
    return display_text(relative.replace(os.sep, "/"))


def inside_file(path: str, real_root: str) -> str | None:
    """The real path of ``path`` when it is a regular file inside ``real_root``, else ``None``.

    A link is followed to its target, which must be inside the studies too; a broken link, a link loop, a folder,
    a FIFO, a socket or a device is never a file to serve (opening a FIFO would block the server).

    Args:
        path: a path found below the studies folder.
        real_root: the studies folder, as ``os.path.realpath`` gives it.
    """
    real = os.path.realpath(path)
    try:
        inside = os.path.commonpath([real, real_root]) == real_root
        return real if inside and stat.S_ISREG(os.stat(real).st_mode) else None
    except (OSError, ValueError):  # a loop, a vanished file, another drive
        return None


def _offered(path: str, real: str) -> bool:
    if path.lower().endswith(IMAGE_EXTENSIONS):
        return True
    try:
        return is_dicom_file(real)
    except OSError:
        return False


def studies_index(root: str, exclude: list[str] | None = None) -> dict[str, str]:
    """Datastore id to file of every image below ``root``, in sorted path order.

    Args:
        root: the studies folder.
        exclude: folders not to list (MONAI Label's ``labels`` folder).

    Returns:
        ``{id: path}``; ids are :func:`datastore_id`, and a second file with the same id (``a.png`` beside ``a.dcm``)
        gets `` (2)`` appended, then `` (3)``.
    """
    real_root = os.path.realpath(root)
    index: dict[str, str] = {}
    for path in list_archive_files(root, exclude or []):
        real = inside_file(path, real_root)
        if real is None or not _offered(path, real):
            continue
        base = unique = datastore_id(os.path.relpath(path, root))
        n = 2
        while unique in index:
            unique, n = f"{base} ({n})", n + 1
        index[unique] = path
    return index


def _discard_upload(path: str) -> None:
    with contextlib.suppress(FileNotFoundError):
        os.remove(path)


class StudiesDatastore(LocalDatastore):
    """A studies folder, listed recursively, serving its own images by id only.

    Ids are :func:`datastore_id` of each file offered (:data:`IMAGE_EXTENSIONS`, or DICOM content); the listing is made
    when the server starts and when MONAI Label's watcher sees a file with an image extension appear or go, in any
    sub-folder (an extensionless DICOM file copied in while the server runs appears at the next such change), never
    inside a request. An id resolves to the file only while it is still a regular file inside the studies folder;
    anything else resolves to nothing, which the app answers 404. MONAI Label's own ``labels`` folder and
    ``datastore_v2.json`` stay where MONAI Label puts them (inside the studies) and are not listed. The studies are
    never written through the server: adding or removing an image and saving a label image are refused (403).

    Args:
        studies: the studies folder.
        auto_reload: watch the folder for changes (MONAI Label's setting).
        read_only: never write ``datastore_v2.json`` (the images are then listed at start-up only).
    """

    def __init__(self, studies: str, auto_reload: bool = True, read_only: bool = False) -> None:
        self._real_root = os.path.realpath(studies)
        self._index: dict[str, str] = {}
        # "**/": MONAI Label's watcher matches these below the studies folder, in sub-folders too
        super().__init__(
            studies, extensions=[f"**/*{e}" for e in IMAGE_EXTENSIONS], auto_reload=auto_reload, read_only=read_only
        )
        if read_only:  # MONAI Label then never reconciles: the ids come from the listing alone
            self._index = self._list()
            self._datastore.objects = {i: self._object(i) for i in self._index}

    def _list(self) -> dict[str, str]:
        index = studies_index(self._datastore_path, exclude=[self._datastore.label_path(None)])
        if not index:
            logger.warning(
                "no images in the studies folder %s (DICOM by content, or %s): the server offers nothing",
                display_text(self._real_root), ", ".join(IMAGE_EXTENSIONS),
            )
        logger.info("studies %s: %d images", display_text(self._real_root), len(index))
        return index

    @staticmethod
    def _object(image_id: str) -> ImageLabelModel:
        return ImageLabelModel(image=DataModel(info={"ts": int(time.time()), "name": image_id}))

    def _init_from_datastore_file(self, throw_exception: bool = False) -> None:
        # a datastore_v2.json that does not load (earlier servers wrote names that are not UTF-8 into it as lone
        # surrogates, which no JSON reader accepts) is logged and written again from the listing: it only holds ids
        # and the strategy's timestamps, and a server that does not start serves nobody
        super()._init_from_datastore_file(throw_exception=False)

    def _reconcile_datastore(self) -> None:
        # one listing per reconciliation, which MONAI Label runs at start-up and from its watcher thread
        self._index = self._list()
        super()._reconcile_datastore()

    def _add_non_existing_images(self) -> int:
        self._init_from_datastore_file()
        new = [i for i in self._index if i not in self._datastore.objects]
        for i in new:
            self._datastore.objects[i] = self._object(i)
        return len(new)

    def _remove_non_existing(self) -> int:
        # an id is whatever the listing has; MONAI Label's check (id + extension below the folder) does not apply
        self._init_from_datastore_file()
        gone = [i for i in self._datastore.objects if i not in self._index]
        for i in gone:
            del self._datastore.objects[i]
        return len(gone)

    def get_image_uri(self, image_id: str) -> str:
        """The real path of the image ``image_id``, or ``""`` when it is not (or no longer) a file of the studies.

        Never a path given by the caller: a path, a ``../`` or an id from another folder resolves to ``""``.
        """
        path = self._index.get(image_id) if image_id in self._datastore.objects else None
        return (inside_file(path, self._real_root) if path else None) or ""

    def get_image_info(self, image_id: str) -> dict[str, Any]:
        """MONAI Label's image info, with the path of the file as UTF-8 text."""
        obj = self._datastore.objects.get(image_id)
        if obj is None:
            return {}
        info = copy.deepcopy(obj.image.info)
        info["path"] = display_text(self.get_image_uri(image_id))
        return info

    def add_image(self, image_id: str, image_filename: str, image_info: dict[str, Any]) -> str:
        """Refused (403): the studies folder is an archive, which the server never writes into.

        MONAI Label would copy the upload to ``<studies>/<image_id><extension>``, where an id holding ``../`` is a
        file anywhere the server may write. The upload's temporary copy is deleted: MONAI Label only deletes it
        after a request that succeeded, and it is an image of a patient.
        """
        _discard_upload(image_filename)
        raise HTTPException(status_code=403, detail=_ARCHIVE)

    def save_label(self, image_id: str, label_filename: str, label_tag: str, label_info: dict[str, Any]) -> str:
        """Refused (403): a classification app has no label images, and MONAI Label would write one to
        ``<studies>/labels/<label_tag>/``, where a tag holding ``../`` is a folder anywhere the server may write. The
        upload's temporary copy is deleted, as for :meth:`add_image`."""
        _discard_upload(label_filename)
        raise HTTPException(status_code=403, detail="the app classifies: it keeps no label images")

    def remove_image(self, image_id: str) -> None:
        """Refused (403): the studies folder is an archive, which the server never deletes from."""
        raise HTTPException(status_code=403, detail=_ARCHIVE)
