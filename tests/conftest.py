"""Suite-wide setup: tiers marked by folder, and an isolated cache for built models."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import pytest

# Built-in models and stored images go to a throwaway folder, never the user's cache.
# Set before anything starts Ray, so replicas inherit it.
os.environ.setdefault("IMAGEGEN_CACHE", tempfile.mkdtemp(prefix="imagegen-test-cache-"))

TIERS = {"integration": pytest.mark.integration, "gpu": pytest.mark.gpu}


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        tier = Path(str(item.fspath)).parent.name
        if tier in TIERS:
            item.add_marker(TIERS[tier])
