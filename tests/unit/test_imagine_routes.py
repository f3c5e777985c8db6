"""The imagine routes in-process: a fake model, the real encoder and a real local store."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from starlette.testclient import TestClient
from starlette.types import ASGIApp, Receive, Scope, Send

from common.errors import StorageUnavailable
from deployments.encoder.server import Encoder
from serve_app.asgi.endpoints import OWNER_SCOPE_KEY
from serve_app.ingress import Ingress
from serve_app.routes import asgi_app
from tests.support.fakes import FakeHandle, ok, wired

KEY = "k" * 32


async def pixels(job: Any) -> np.ndarray:
    return np.full((job.n, 8, 8, 3), job.seeds[0] % 256, np.uint8)


def make_ingress(tmp_path: Path) -> Ingress:
    storage = {"local_dir": str(tmp_path)}
    encoder = Encoder(storage, KEY)

    async def encode(pixels: Any, spec: Any, preview: bool = False) -> Any:
        return encoder.encode(pixels, spec, preview)

    args = {"models": [{"id": "tiny", "source": "builtin:tiny-sdxl"}], "storage": storage}
    model, encoding = FakeHandle(generate=pixels, ready=ok), FakeHandle(encode=encode, ready=ok)
    return Ingress(args, wired({"tiny": model}, encoding), encoding, KEY)  # type: ignore[arg-type]


class OwnerFromHeader:
    """What the auth layer will do: map the caller's key to an owner id in the scope."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            headers = dict(scope["headers"])
            if b"x-test-owner" in headers:
                scope[OWNER_SCOPE_KEY] = headers[b"x-test-owner"].decode()
        await self.app(scope, receive, send)


def test_owners_are_isolated_through_the_seam(tmp_path: Path) -> None:
    client = TestClient(OwnerFromHeader(asgi_app(make_ingress(tmp_path))))
    alice, bob = {"x-test-owner": "alice"}, {"x-test-owner": "bob"}
    made = client.post("/v1/images/imagine", json={"name": "a", "prompt": "p"}, headers=alice)
    image_id = made.json()["id"]
    assert client.get(f"/v1/images/{image_id}", headers=alice).status_code == 200
    for method, path in [
        ("GET", f"/v1/images/{image_id}"),
        ("GET", f"/v1/images/{image_id}/download"),
        ("POST", f"/v1/images/{image_id}/publish"),
        ("DELETE", f"/v1/images/{image_id}"),
    ]:
        assert client.request(method, path, headers=bob).status_code == 404
    assert client.get("/v1/images", headers=bob).json()["data"] == []
    assert [i["id"] for i in client.get("/v1/images", headers=alice).json()["data"]] == [image_id]
    assert client.get("/v1/images").json()["data"] == []  # the default owner is someone else


def test_a_failed_record_write_leaves_no_orphaned_bytes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    ingress = make_ingress(tmp_path)

    def unavailable(record: Any) -> None:
        raise StorageUnavailable("store down")

    monkeypatch.setattr(ingress.catalog, "save", unavailable)
    client = TestClient(asgi_app(ingress))
    response = client.post("/v1/images/imagine", json={"name": "a", "prompt": "p"})
    assert response.status_code == 503
    assert response.json()["error"]["code"] == "storage_unavailable"
    assert response.headers["retry-after"]
    assert ingress.store.list("images/") == []


def test_the_local_default_never_imports_boto3(tmp_path: Path) -> None:
    code = (
        "import sys\n"
        "from deployments.encoder.server import Encoder\n"
        "import serve_app.app\n"
        f"Encoder({{'local_dir': {str(tmp_path)!r}}}, 'k' * 32)\n"
        "sys.exit('boto3' in sys.modules or 'botocore' in sys.modules)\n"
    )
    assert subprocess.run([sys.executable, "-c", code], check=False).returncode == 0
