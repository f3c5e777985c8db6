"""The one cache root every part of the server writes under."""

from __future__ import annotations

import os
from pathlib import Path

CACHE_ENV = "IMAGEGEN_CACHE"


def default_cache_root() -> Path:
    """Where built-in models, local images and options live: ``$IMAGEGEN_CACHE`` or
    ``~/.cache/imagegen-serve``."""
    env = os.environ.get(CACHE_ENV)
    return Path(env) if env else Path.home() / ".cache" / "imagegen-serve"
