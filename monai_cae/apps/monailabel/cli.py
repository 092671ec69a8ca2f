"""``monai-cae-label``: MONAI Label's command line with this app and its server application as defaults."""

from __future__ import annotations

import sys
from collections.abc import Sequence

from monai_cae.apps.monailabel import APP_DIR, UVICORN_APP

__all__ = ["main", "server_arguments"]


def server_arguments(argv: Sequence[str]) -> list[str]:
    """MONAI Label arguments with ``--app`` and ``--uvicorn_app`` added to ``start_server`` when not given.

    Args:
        argv: arguments after the program name, e.g. ``["start_server", "--studies", "/data/cxr"]``.

    Returns:
        The arguments for ``monailabel.main``.
    """
    args = list(argv)
    if args[:1] != ["start_server"]:
        return args
    if not {"-a", "--app"} & set(args):
        args += ["--app", APP_DIR]
    if "--uvicorn_app" not in args:
        args += ["--uvicorn_app", UVICORN_APP]
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
