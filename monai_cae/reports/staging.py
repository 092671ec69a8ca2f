"""The staging folder a report is written into, private until it is published at once beside the output."""

from __future__ import annotations

import os
import re
import shutil
import socket
import uuid

from monai_cae.data.manifest import REPORT_MARKER
from monai_cae.utils.io import atomic_write, publish_folder

__all__ = ["NoImagesError", "ReportStaging", "check_output_dir", "raise_without_images"]


class NoImagesError(RuntimeError):
    """No image of the archive could be processed (the report folder still lists every file and why)."""


def check_output_dir(output_dir: str, overwrite: bool = False) -> None:
    """Fail early, before any work, when the report cannot be written where asked.

    Args:
        output_dir: report folder.
        overwrite: whether an existing report may be replaced.

    Raises:
        FileExistsError: when ``output_dir`` is a file, or a non-empty folder and ``overwrite`` is false.
        PermissionError: when its parent folder cannot be written.
    """
    path = os.path.abspath(output_dir)
    if os.path.exists(path) and not os.path.isdir(path):
        raise FileExistsError(f"output_dir {path} is a file, not a folder.")
    if os.path.isdir(path) and os.listdir(path) and not overwrite:
        raise FileExistsError(
            f"output_dir {path} already holds a report; pass --overwrite (bundle: --overwrite True) to replace it."
        )
    parent = os.path.dirname(path)
    existing = parent
    while not os.path.isdir(existing):
        existing = os.path.dirname(existing)
    if not os.access(existing, os.W_OK | os.X_OK):
        raise PermissionError(f"cannot write the report: {existing} is not writable.")


def _staging_folder(target: str) -> str:
    # the process and host that own it are in the name, so that a later run can tell a killed run's folder
    name = f".{os.path.basename(target)}.tmp-{os.getpid()}-{socket.gethostname()}-{uuid.uuid4().hex}"
    return os.path.join(os.path.dirname(target), name)


def _running(pid: int) -> bool:
    try:
        os.kill(pid, 0)  # signal 0 only asks whether the process exists
    except ProcessLookupError:
        return False
    except PermissionError:  # it exists, and is another user's
        pass
    return True


def _remove_stale_staging(target: str) -> None:
    # a run killed before it published leaves its staging folder, which holds patient data, beside the output; the
    # folders of this host's runs whose process is gone are removed (a run still going, or another machine's on a
    # shared disk, is left alone)
    stale = re.compile(rf"^\.{re.escape(os.path.basename(target))}\.tmp-(\d{{1,9}})-(.+)-[0-9a-f]{{32}}(\.old)?$")
    parent, host = os.path.dirname(target), socket.gethostname()
    for name in os.listdir(parent):
        match = stale.match(name)
        if match is None or match[2] != host or _running(int(match[1])):
            continue
        if match[3] and not os.path.isdir(target):
            continue  # the previous report, moved aside by a run killed before the new one took its place
        shutil.rmtree(os.path.join(parent, name), ignore_errors=True)


def _folder_mode() -> int:
    # the rights os.mkdir gives under the umask, which can only be read by setting it (briefly to private)
    umask = os.umask(0o077)
    os.umask(umask)
    return 0o777 & ~umask




class ReportStaging:
    """The hidden staging folder a report is written into beside ``output_dir``, then published at once.

    It is private to the user until it is published (then it gets the usual umask rights), and holds
    :data:`~monai_cae.data.manifest.REPORT_MARKER` from the start, so that a scan of an archive that holds it never
    reads it. Its ``.work`` folder (the run's scratch files: the manifest and the assignment on disk) is removed
    before publishing. Staging folders that killed runs of this host left are removed first; on any error, this one
    is removed too, so that no patient data stays behind.

    Args:
        output_dir: the report folder.
        overwrite: whether :meth:`publish` may replace an existing report.
    """

    def __init__(self, output_dir: str, overwrite: bool = False) -> None:
        self.target, self.overwrite = os.path.abspath(output_dir), overwrite
        os.makedirs(os.path.dirname(self.target), exist_ok=True)
        _remove_stale_staging(self.target)
        self.folder = _staging_folder(self.target)
        os.mkdir(self.folder, 0o700)
        try:
            # first: a scan of an archive that holds this folder must never read it, even half-written
            atomic_write(os.path.join(self.folder, REPORT_MARKER), lambda f: f.write(
                "Written by monai-cae-report. Archive scans (monai_cae.data.scan_archive) do not read this folder.\n"))
            os.mkdir(self.work(), 0o700)
        except BaseException:
            self.discard()
            raise

    def work(self, *names: str) -> str:
        """A path in the scratch folder."""
        return os.path.join(self.folder, ".work", *names)

    def path(self, *names: str) -> str:
        """A path in the report."""
        return os.path.join(self.folder, *names)

    def publish(self) -> None:
        """Remove the scratch files and put the report in place of ``output_dir`` (:func:`publish_folder`)."""
        shutil.rmtree(self.work(), ignore_errors=True)
        os.chmod(self.folder, _folder_mode())
        publish_folder(self.folder, self.target, self.overwrite)

    def discard(self) -> None:
        """Remove the staging folder and all it holds."""
        shutil.rmtree(self.folder, ignore_errors=True)

    def __enter__(self) -> ReportStaging:
        return self

    def __exit__(self, kind: type | None, *_: object) -> None:
        if kind is not None:
            self.discard()


def raise_without_images(report: dict, output_dir: str) -> dict:
    """``report``, once published; a report that processed no image raises.

    Raises:
        NoImagesError: when no image could be processed.
    """
    if not report["counts"]["processed"]:
        raise NoImagesError(
            f"no image could be processed ({report['counts']['files']} files, reasons "
            f"{report['counts']['skipped_by_reason']}); every file and why is listed in "
            f"{os.path.join(os.path.abspath(output_dir), 'skipped.csv')}."
        )
    return report
