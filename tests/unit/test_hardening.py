"""The ingress guard without Ray: API keys, body limits, strict JSON, headers, limits."""

from __future__ import annotations

import logging

import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route
from starlette.testclient import TestClient

from common import limits
from common.config import ApiKeysConfig, ImageInputConfig, IngressConfig
from common.errors import APIError
from common.model_config import ModelConfig
from common.request_context import RequestIdFilter, sane_request_id
from serve_app.asgi.auth import ApiKeys, key_owner, load_keys, needs_api_key, parse_keys
from serve_app.asgi.endpoints import OWNER_SCOPE_KEY, api_endpoint, read_json, request_id_of
from serve_app.asgi.middleware import ingress_middleware
from serve_app.asgi.openapi import ApiRoute, build_document
from serve_app.routes.generations import GENERATIONS

KEY = "sk-unit-0123456789abcdef"


def make_client(keys: list[str] | None = None, **config: object) -> TestClient:
    ingress = IngressConfig.model_validate({"max_body_bytes": 2048, **config})

    async def echo(request: Request) -> Response:
        body = await read_json(request)  # the guard, not the route, limits size
        return JSONResponse(
            {"owner": request.scope.get(OWNER_SCOPE_KEY), "rid": request_id_of(request), **body}
        )

    async def boom(request: Request) -> Response:
        raise RuntimeError("/secret/path/module.py exploded")

    routes = [
        Route("/v1/echo", api_endpoint(echo), methods=["POST"]),
        Route("/v1/boom", boom, methods=["GET"]),
        Route("/health", lambda r: JSONResponse({"status": "ok"}), methods=["GET"]),
    ]
    app = Starlette(
        routes=routes,
        middleware=ingress_middleware(ingress, ImageInputConfig(), ApiKeys(keys or [])),
    )
    return TestClient(app, raise_server_exceptions=False)


def test_keys_parse_and_short_keys_fail_without_echo() -> None:
    assert parse_keys(f"# comment\n{KEY}\n\n") == [KEY]
    assert parse_keys(f"{KEY}, {KEY}x", separator=",") == [KEY, KEY + "x"]
    with pytest.raises(ValueError) as info:
        parse_keys("short-secret")
    assert "short-secret" not in str(info.value)


def test_required_keys_stop_startup(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("IMAGEGEN_API_KEYS", raising=False)
    assert load_keys(ApiKeysConfig()) == []
    with pytest.raises(ValueError, match="no API key"):
        load_keys(ApiKeysConfig(required=True))
    monkeypatch.setenv("IMAGEGEN_API_KEYS", KEY)
    assert load_keys(ApiKeysConfig()) == [KEY]


def test_api_key_check() -> None:
    keys = ApiKeys([KEY])
    assert keys.owner(f"Bearer {KEY}") == key_owner(KEY)
    for header, code in [
        (None, "missing_api_key"),
        ("Basic abc", "missing_api_key"),
        (f"Bearer {KEY}x", "invalid_api_key"),
    ]:
        with pytest.raises(APIError) as info:
            keys.owner(header)
        assert info.value.status == 401 and info.value.code == code
    assert KEY not in key_owner(KEY)


def test_open_routes() -> None:
    assert not needs_api_key("/health") and not needs_api_key("/openapi.json")
    assert not needs_api_key("/sdapi/v1/txt2img") and not needs_api_key("/v1/images/files/a")
    assert needs_api_key("/v1/images/generations") and needs_api_key("/v1/models")


def test_guard_sets_owner_and_refuses_without_key() -> None:
    client = make_client([KEY])
    assert client.get("/health").status_code == 200
    refused = client.post("/v1/echo", json={})
    assert refused.status_code == 401 and refused.json()["error"]["code"] == "missing_api_key"
    ok = client.post("/v1/echo", json={}, headers={"authorization": f"Bearer {KEY}"})
    assert ok.json()["owner"] == key_owner(KEY)


def test_declared_and_streamed_bodies_over_the_limit_are_413() -> None:
    client = make_client()
    declared = client.post("/v1/echo", content=b"{}" * 2000, headers={"content-type": "x"})
    assert declared.status_code == 413 and "max_body_bytes" in declared.json()["error"]["message"]

    def chunks() -> object:
        yield b'{"a": "' + b"x" * 1500
        yield b"x" * 1500 + b'"}'

    streamed = client.post("/v1/echo", content=chunks())
    assert streamed.status_code == 413
    upload = client.post(
        "/v1/echo", content=b"x" * 4000, headers={"content-type": "multipart/form-data; b=1"}
    )
    assert upload.status_code != 413  # uploads have their own, larger limit


def test_escaped_exceptions_become_clean_500s_with_headers() -> None:
    response = make_client().get("/v1/boom")
    assert response.status_code == 500
    assert "/secret/path" not in response.text and "Traceback" not in response.text
    assert response.headers["x-content-type-options"] == "nosniff"
    assert response.headers["cache-control"] == "no-store"
    assert response.headers["x-request-id"] in response.json()["error"]["message"]


def test_request_ids() -> None:
    client = make_client()
    assert (
        client.post("/v1/echo", json={}, headers={"x-request-id": "abc-1"}).json()["rid"] == "abc-1"
    )
    weird = client.post("/v1/echo", json={}, headers={"x-request-id": "a b<c>"}).json()["rid"]
    assert weird != "a b<c>" and sane_request_id(weird) == weird
    assert sane_request_id("x" * 129) is None
    record = logging.LogRecord("imagegen.x", logging.INFO, "f", 1, "m", None, None)
    assert RequestIdFilter().filter(record) and record.request_id == "-"


def test_cors_only_when_configured() -> None:
    preflight = {"origin": "https://a.example", "access-control-request-method": "POST"}
    assert (
        "access-control-allow-origin"
        not in make_client().options("/v1/echo", headers=preflight).headers
    )
    client = make_client([KEY], cors={"allow_origins": ["https://a.example"]})
    answer = client.options("/v1/echo", headers=preflight)
    assert answer.status_code == 200
    assert answer.headers["access-control-allow-origin"] == "https://a.example"


@pytest.mark.parametrize(
    "body,fragment",
    [
        (b'{"a": NaN}', "NaN"),
        (b'{"a": -Infinity}', "-Infinity"),
        (b"[" * 5000 + b"]" * 5000, "nested"),
        (b"[" * 40 + b"]" * 40, "nested"),
        (b'{"\\udc00": 1}', "surrogate"),
        (b'"\\ud800"', "surrogate"),
        (b"{", "Expecting"),
    ],
)
def test_strict_json(body: bytes, fragment: str) -> None:
    with pytest.raises(APIError) as info:
        limits.parse_json(body)
    assert info.value.code == "invalid_json" and fragment in info.value.message


def test_strict_json_keeps_valid_input() -> None:
    assert limits.parse_json(b'{"p": "a\\u0000\\ud83d\\ude00", "n": [1, 2.5]}') == {
        "p": "a\x00\U0001f600",
        "n": [1, 2.5],
    }


def test_limits_name_the_setting() -> None:
    model = ModelConfig(id="m", source="builtin:tiny-sdxl", max_pixels_per_request=1 << 20)
    cases = [
        ({"n": 11}, "max_images_per_request"),
        ({"prompt": "x" * 4001}, "max_prompt_chars"),
        ({"negative_prompt": "x" * 4001}, "max_prompt_chars"),
        ({"steps": 101}, "max_steps"),
    ]
    for override, name in cases:
        kwargs = {"n": 1, "prompt": "x", "steps": 1, "steps_param": "steps", **override}
        with pytest.raises(APIError) as info:
            limits.check_request(model, **kwargs)  # type: ignore[arg-type]
        assert name in info.value.message and info.value.status == 400
    with pytest.raises(APIError, match="max_pixels_per_request"):
        limits.check_pixels(model, 2, 1024, 1024, "n")
    limits.check_pixels(model, 1, 1024, 1024, "n")


def test_openapi_document_from_routes() -> None:
    async def nothing(request: Request) -> Response:
        return Response()

    routes = [
        ApiRoute("/v1/images/generations", nothing, "POST", GENERATIONS),
        Route("/v1/new/{thing:path}", nothing, methods=["GET"]),  # a route nobody described
    ]
    document = build_document(routes)
    generate = document["paths"]["/v1/images/generations"]["post"]
    assert generate["requestBody"]["content"]["application/json"]["schema"]["$ref"].endswith(
        "ImageGenerateRequest"
    )
    new = document["paths"]["/v1/new/{thing}"]["get"]
    assert new["parameters"][0]["name"] == "thing" and "400" in new["responses"]
    assert new["security"] == [{"apiKey": []}]


def test_uploads_get_the_upload_limit_everything_else_the_body_limit() -> None:
    ingress, images = IngressConfig(max_body_bytes=4096), ImageInputConfig(max_upload_bytes=8192)
    multipart = "multipart/form-data; boundary=x"
    assert limits.body_limit(ingress, images, "/v1/images/edits", multipart) == limits.BodyLimit(
        8192, "images.max_upload_bytes"
    )
    assert limits.body_limit(ingress, images, "/sdapi/v1/img2img", "application/json").bytes == 8192
    plain = limits.body_limit(ingress, images, "/v1/images/generations", "application/json")
    assert plain == limits.BodyLimit(4096, "ingress.max_body_bytes")
