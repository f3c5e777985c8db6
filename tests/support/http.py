"""Helpers for end-to-end tests over HTTP: the error-shape assertion and Open WebUI's A1111 auth."""

from __future__ import annotations

import base64

import httpx

from tests.integration.conftest import A1111_PASSWORD, A1111_USER


def assert_error(response: httpx.Response, status: int, param: str | None, error_type: str) -> None:
    assert response.status_code == status, response.text
    body = response.json()
    assert set(body) == {"error"}
    assert set(body["error"]) == {"message", "type", "param", "code"}
    assert body["error"]["type"] == error_type
    assert body["error"]["param"] == param
    assert "Traceback" not in response.text and "/work/" not in response.text
    assert response.headers.get("x-request-id")


def webui_auth() -> dict[str, str]:
    """What Open WebUI sends: ``authorization: Basic base64(AUTOMATIC1111_API_AUTH)``."""
    token = base64.b64encode(f"{A1111_USER}:{A1111_PASSWORD}".encode()).decode()
    return {"authorization": f"Basic {token}"}
