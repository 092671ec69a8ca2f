"""Compatibility of MONAI Label 0.8.5 with pydicom 3, applied before anything imports ``monailabel.interfaces``."""

from __future__ import annotations

import importlib.util
import sys
import types

__all__ = ["patch_pydicom_seg"]

_REMOVED_MODULE = "pydicom._storage_sopclass_uids"


def patch_pydicom_seg() -> None:
    """Let pydicom-seg 0.4.1 import under pydicom 3, so that MONAI Label 0.8.5 starts.

    MONAI Label imports pydicom-seg at start-up (for DICOM SEG export, which this classification app never uses), and
    pydicom-seg takes ``SegmentationStorage`` from ``pydicom._storage_sopclass_uids``, a private module that pydicom
    3 removed; the UID itself lives on in ``pydicom.uid``. monai_cae needs pydicom 3 (its pixel pipeline), so that
    module is provided again, holding the one name pydicom-seg reads. Nothing changes where pydicom still has it.
    """
    if _REMOVED_MODULE in sys.modules or importlib.util.find_spec(_REMOVED_MODULE) is not None:
        return
    from pydicom.uid import SegmentationStorage

    module = types.ModuleType(_REMOVED_MODULE, "pydicom 2's SOP class UIDs, as far as pydicom-seg 0.4.1 reads them")
    module.SegmentationStorage = SegmentationStorage
    sys.modules[_REMOVED_MODULE] = module
