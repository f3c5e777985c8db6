"""Paths every layer agrees on: the cache root every part of the server writes under,
and the URL prefix of the AUTOMATIC1111 API (the body limits in ``common.limits``, auth,
the error shape and the A1111 routes all read it here)."""

from __future__ import annotations

import os
from pathlib import Path

CACHE_ENV = "IMAGEGEN_CACHE"
# Everything under A1111_ROOT answers in A1111's shape; its routes live under A1111_API.
A1111_ROOT = "/sdapi/"
A1111_API = f"{A1111_ROOT}v1"


def default_cache_root() -> Path:
    """Where built-in models, local images and options live: ``$IMAGEGEN_CACHE`` or
    ``~/.cache/imagegen-serve``."""
    env = os.environ.get(CACHE_ENV)
    return Path(env) if env else Path.home() / ".cache" / "imagegen-serve"
