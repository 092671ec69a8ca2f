"""``monai-cae-label``: MONAI Label's command line with this app, its server application and 127.0.0.1 as defaults."""

from __future__ import annotations

import sys
from collections.abc import Sequence

from monai_cae.apps.monailabel import APP_DIR, UVICORN_APP

__all__ = ["DEFAULT_HOST", "main", "server_arguments"]


DEFAULT_HOST = "127.0.0.1"
"""Where ``start_server`` listens unless ``--host`` (``-i``) says otherwise: MONAI Label's own default, 0.0.0.0,
would serve patient images, without authentication, to every machine that can reach this one."""


def _given(args: Sequence[str], long: str, short: str | None = None) -> bool:
    # every spelling argparse accepts: "--host x", "--host=x", an abbreviation ("--ho x"), "-i x", "-ix"
    for arg in args:
        name = arg.split("=", 1)[0]
        if name.startswith("--") and len(name) > 3 and long.startswith(name):
            return True
        if short is not None and arg.startswith(short) and not arg.startswith("--"):
            return True
    return False


def server_arguments(argv: Sequence[str]) -> list[str]:
    """MONAI Label arguments with ``--app``, ``--uvicorn_app`` and ``--host 127.0.0.1`` added to ``start_server``
    when not given.

    Args:
        argv: arguments after the program name, e.g. ``["start_server", "--studies", "/data/cxr"]``.

    Returns:
        The arguments for ``monailabel.main``.
    """
    args = list(argv)
    if args[:1] != ["start_server"]:
        return args
    if not _given(args, "--app", "-a"):
        args += ["--app", APP_DIR]
    if not _given(args, "--uvicorn_app"):
        args += ["--uvicorn_app", UVICORN_APP]
    if not _given(args, "--host", "-i"):
        args += ["--host", DEFAULT_HOST]
    return args


def main(argv: Sequence[str] | None = None) -> None:
    """Run MONAI Label (``start_server``, ``apps``, ...) with this app's defaults.

    Args:
        argv: arguments after the program name; ``sys.argv[1:]`` when omitted.
    """
    args = server_arguments(sys.argv[1:] if argv is None else argv)
    try:
        from monailabel.main import Main
    except ImportError as e:
        sys.exit(
            f"MONAI Label is not installed ({e}): pip install -e '.[label]' && "
            "pip install --no-deps monailabel==0.8.5 pydicom-seg==0.4.1"
        )
    sys.argv = ["monailabel", *args]
    Main().run()


if __name__ == "__main__":
    main()
