"""API keys, CORS, security headers and request ids, over real HTTP.

Runs on the ``imagegen-hardened`` app (keys on, CORS on) and, for the defaults,
on the main app (keys off, CORS off).
"""

from __future__ import annotations

import base64
import uuid
from pathlib import Path

import httpx
import openai
import pytest

from tests.support.hardened_app import API_KEY, CORS_ORIGIN, SECOND_KEY

GEN = "/v1/images/generations"


@pytest.fixture(scope="module")
def hard(hardened_url: str) -> httpx.Client:
    with httpx.Client(base_url=hardened_url, timeout=120) as session:
        yield session


def sdk(hardened_url: str, key: str) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{hardened_url}/v1", api_key=key, max_retries=0, timeout=120)


def test_wrong_key_is_an_authentication_error_in_the_sdk(hardened_url: str) -> None:
    with pytest.raises(openai.AuthenticationError) as info:
        sdk(hardened_url, "sk-wrong-key-0000000000000").images.generate(prompt="x")
    assert info.value.status_code == 401
    assert info.value.code == "invalid_api_key"
    with pytest.raises(openai.AuthenticationError):
        sdk(hardened_url, "sk-wrong-key-0000000000000").models.list()


def test_right_key_works_in_the_sdk(hardened_url: str) -> None:
    result = sdk(hardened_url, API_KEY).images.generate(prompt="a key", size="256x256")
    assert base64.b64decode(result.data[0].b64_json)[:4] == b"\x89PNG"
    assert sdk(hardened_url, SECOND_KEY).models.list().data


def test_missing_key_is_401_in_openai_shape(hard: httpx.Client) -> None:
    response = hard.post(GEN, json={"prompt": "x"})
    assert response.status_code == 401
    assert response.headers["www-authenticate"] == "Bearer"
    error = response.json()["error"]
    assert error["type"] == "authentication_error" and error["code"] == "missing_api_key"
    # Nothing of what was sent comes back.
    bad = hard.post(GEN, json={"prompt": "x"}, headers={"authorization": "Bearer leaked-guess"})
    assert bad.status_code == 401 and "leaked-guess" not in bad.text


@pytest.mark.parametrize("path", ["/health", "/ready", "/openapi.json", "/sdapi/v1/sd-models"])
def test_open_routes_need_no_key(hard: httpx.Client, path: str) -> None:
    assert hard.get(path).status_code == 200


def test_each_key_owns_its_images(hard: httpx.Client) -> None:
    first = {"authorization": f"Bearer {API_KEY}"}
    second = {"authorization": f"Bearer {SECOND_KEY}"}
    made = hard.post("/v1/images/imagine", json={"name": "mine", "prompt": "x"}, headers=first)
    assert made.status_code == 200, made.text
    image_id = made.json()["id"]
    assert hard.get(f"/v1/images/{image_id}", headers=first).status_code == 200
    assert hard.get(f"/v1/images/{image_id}", headers=second).status_code == 404
    listed = hard.get("/v1/images", headers=second).json()["data"]
    assert image_id not in {item["id"] for item in listed}


def test_cors_is_off_by_default(http: httpx.Client) -> None:
    preflight = http.options(
        GEN,
        headers={"origin": CORS_ORIGIN, "access-control-request-method": "POST"},
    )
    assert "access-control-allow-origin" not in preflight.headers
    plain = http.get("/health", headers={"origin": CORS_ORIGIN})
    assert "access-control-allow-origin" not in plain.headers


def test_cors_when_configured(hard: httpx.Client) -> None:
    preflight = hard.options(
        GEN,
        headers={
            "origin": CORS_ORIGIN,
            "access-control-request-method": "POST",
            "access-control-request-headers": "authorization, content-type",
        },
    )
    assert preflight.status_code == 200  # answered before the key check
    assert preflight.headers["access-control-allow-origin"] == CORS_ORIGIN
    other = hard.options(
        GEN, headers={"origin": "https://evil.example", "access-control-request-method": "POST"}
    )
    assert other.status_code == 400
    assert "access-control-allow-origin" not in other.headers


def test_security_headers_on_served_images(http: httpx.Client) -> None:
    made = http.post(GEN, json={"prompt": "x", "size": "256x256", "response_format": "url"})
    url = made.json()["data"][0]["url"]
    image = http.get(url)
    assert image.status_code == 200 and image.headers["content-type"] == "image/png"
    assert image.headers["x-content-type-options"] == "nosniff"
    assert "default-src 'none'" in image.headers["content-security-policy"]
    assert image.headers["cache-control"].startswith("private")


def test_api_responses_are_not_cached_and_carry_request_ids(http: httpx.Client) -> None:
    response = http.get("/v1/models")
    assert response.headers["cache-control"] == "no-store"
    assert response.headers["x-content-type-options"] == "nosniff"
    assert len(response.headers["x-request-id"]) >= 16


def test_a_sane_incoming_request_id_is_honoured(http: httpx.Client) -> None:
    headers = {"x-request-id": "req-abc.123"}
    response = http.post(GEN, json={"prompt": "x", "n": 99}, headers=headers)
    assert response.status_code == 400
    assert response.headers["x-request-id"] == "req-abc.123"


def test_an_insane_request_id_never_reaches_messages(http: httpx.Client) -> None:
    weird = "<script>alert(1)</script>" + "x" * 300
    response = http.post(GEN, content=b"{", headers={"x-request-id": weird})
    assert response.status_code == 400
    assert "<script>" not in response.json()["error"]["message"]


def test_log_lines_name_the_request(http: httpx.Client) -> None:
    """The ingress logs ignored fields at INFO; the line carries the request id."""
    import ray

    from tests.integration.conftest import wait_until

    rid = "req-log-" + uuid.uuid4().hex
    response = http.post(
        GEN, json={"prompt": "x", "size": "256x256", "quality": "hd"}, headers={"x-request-id": rid}
    )
    assert response.status_code == 200
    logs = Path(ray._private.worker._global_node.get_logs_dir_path())

    def logged() -> bool:
        return any(
            f"[request_id={rid}]" in path.read_text(errors="replace")
            for path in logs.glob("worker-*")
        )

    wait_until(logged, 30, "the ingress's log line with the request id")
