"""The ingress's own admission: past max_concurrent_requests a JSON 429, /health still answers."""

from __future__ import annotations

import asyncio

import httpx
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from common.config import ImageInputConfig, IngressConfig
from serve_app.asgi.auth import ApiKeys
from serve_app.asgi.middleware import ingress_middleware


def app(config: IngressConfig, release: asyncio.Event) -> Starlette:
    async def slow(request: Request) -> JSONResponse:
        await release.wait()
        return JSONResponse({"ok": True})

    async def health(request: Request) -> JSONResponse:
        return JSONResponse({"status": "ok"})

    return Starlette(
        routes=[Route("/slow", slow), Route("/health", health)],
        middleware=ingress_middleware(config, ImageInputConfig(), ApiKeys([])),
    )


async def test_past_the_limit_is_a_json_429_with_retry_after() -> None:
    release = asyncio.Event()
    config = IngressConfig(max_concurrent_requests=3)
    transport = httpx.ASGITransport(app=app(config, release))
    async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
        held = [asyncio.create_task(client.get("/slow")) for _ in range(3)]
        await asyncio.sleep(0.05)
        refused = await client.get("/slow")
        assert refused.status_code == 429
        assert refused.headers["retry-after"] == "1"
        assert refused.json()["error"]["code"] == "overloaded"
        assert (await client.get("/health")).status_code == 200
        release.set()
        assert [r.status_code for r in await asyncio.gather(*held)] == [200, 200, 200]
        assert (await client.get("/slow")).status_code == 200  # the slots came back


def test_limit_defaults_below_serve_and_must_stay_below() -> None:
    assert IngressConfig().admission_limit() == 224  # 256 - 256 // 8
    with pytest.raises(ValueError, match="max_concurrent_requests"):
        IngressConfig(max_concurrent_requests=300)
