"""``monai-cae-bundle``: write the ``cae`` MONAI Bundle that travels inside the installed package to a folder.

    monai-cae-bundle DEST          write DEST (configs/, docs/, models/ with the trained weights, LICENSE)

Then, from inside DEST: ``python -m monai.bundle run inference --config_file configs/inference.json --input_dir
ARCHIVE`` (the shipped model, no training needed) or ``run training --config_file configs/train.json``.

Exit status: 0 when the bundle was written, 2 when DEST exists and is not an empty folder.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
from collections.abc import Sequence

__all__ = ["bundle_dir", "main", "write_bundle"]

_BUNDLE_PARTS = ("LICENSE", "configs", "docs", "models")


def bundle_dir() -> str:
    """The ``cae`` bundle of the installed package: ``bundles/cae`` of a source checkout, package data of a wheel."""
    return os.path.realpath(os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "bundle"))


def write_bundle(destination: str) -> str:
    """Copy the bundle's files (configs, docs, shipped models, licence) into ``destination``.

    Only what a bundle consists of is copied: never a ``runs/`` folder that a run from inside a source checkout's
    bundle left there.

    Args:
        destination: folder to create; it may exist if it is empty.

    Returns:
        The absolute path of the written bundle.

    Raises:
        FileExistsError: when ``destination`` exists and is not an empty folder (nothing is overwritten).
    """
    destination = os.path.abspath(destination)
    if os.path.lexists(destination) and not (os.path.isdir(destination) and not os.listdir(destination)):
        raise FileExistsError(f"{destination} exists and is not an empty folder: choose a new one.")
    source = bundle_dir()
    os.makedirs(destination, exist_ok=True)
    for part in _BUNDLE_PARTS:
        path = os.path.join(source, part)
        if os.path.isdir(path):
            shutil.copytree(path, os.path.join(destination, part), ignore=shutil.ignore_patterns("__pycache__"))
        else:
            shutil.copy2(path, destination)
    return destination


def main(argv: Sequence[str] | None = None) -> int:
    """Command line entry point; see the module docstring."""
    parser = argparse.ArgumentParser(prog="monai-cae-bundle", description=__doc__.split("\n\n")[0])
    parser.add_argument("destination", help="folder to write the bundle into (new, or empty)")
    args = parser.parse_args(argv)
    try:
        path = write_bundle(args.destination)
    except FileExistsError as e:
        print(f"monai-cae-bundle: {e}", file=sys.stderr)
        return 2
    print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
