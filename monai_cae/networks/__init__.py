from __future__ import annotations

from .nets import *  # noqa: F401,F403
