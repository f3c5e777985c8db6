"""Both image-store backends behind one fixture, so one contract suite runs on each.

``local`` is a folder in ``tmp_path``; its URLs are fetched through the ingress's real
file routes (Starlette's TestClient). ``s3`` is the moto_server process, each test in
its own key prefix; its presigned URLs are fetched over plain HTTP.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace
from urllib.parse import urlsplit

import httpx
import pytest
from starlette.applications import Starlette
from starlette.testclient import TestClient

from common.config import StorageConfig
from serve_app.routes import files
from storage.base import ImageStore
from storage.catalog import ImageCatalog
from storage.factory import make_store

SIGNING_KEY = "k" * 32


@dataclass
class Backend:
    store: ImageStore
    fetch: Callable[[str], httpx.Response]


def s3_config(endpoint: str, bucket: str, **overrides: object) -> StorageConfig:
    return StorageConfig.model_validate(
        {
            "kind": "s3",
            "bucket": bucket,
            "endpoint_url": endpoint,
            "region": "us-east-1",
            "addressing_style": "path",
            "prefix": f"t-{uuid.uuid4().hex[:12]}/",
            **overrides,
        }
    )


def local_backend(tmp_path: Path) -> Backend:
    store = make_store(StorageConfig(local_dir=str(tmp_path / "store")), SIGNING_KEY)
    ingress = SimpleNamespace(store=store, catalog=ImageCatalog(store))
    client = TestClient(Starlette(routes=files.routes(ingress)))  # type: ignore[arg-type]

    def fetch(url: str) -> httpx.Response:
        parts = urlsplit(url)
        return client.get(f"{parts.path}?{parts.query}")

    return Backend(store, fetch)


@pytest.fixture(params=["local", "s3"])
def backend(request: pytest.FixtureRequest, tmp_path: Path) -> Backend:
    if request.param == "local":
        return local_backend(tmp_path)
    endpoint = request.getfixturevalue("s3_endpoint")
    bucket = request.getfixturevalue("s3_bucket")
    store = make_store(s3_config(endpoint, bucket), SIGNING_KEY)
    return Backend(store, lambda url: httpx.get(url, timeout=30))


@pytest.fixture
def store(backend: Backend) -> ImageStore:
    return backend.store
