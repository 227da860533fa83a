"""Where evaluation keeps what it builds once: parsed BIG-bench questions (``suite``) and lm-eval
task folders (``tasks``). Both read it from here, so the suite needs nothing from the tasks above it."""

from __future__ import annotations

import os
from pathlib import Path


def cache_root() -> Path:
    """``$INHERITUNE_CACHE`` or ``~/.cache/inheritune``."""
    return Path(os.environ.get("INHERITUNE_CACHE") or Path.home() / ".cache" / "inheritune")
