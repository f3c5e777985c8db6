"""Hostile input over real HTTP: each case is a clean 4xx, never a 500, a traceback or a hang.

Bodies are sent as raw bytes, so the cases include what no JSON library would write
(NaN, lone surrogates, 100k levels of nesting).
"""

from __future__ import annotations

import contextlib
import json
import socket
import time
from urllib.parse import urlsplit

import httpx
import pytest

GEN = "/v1/images/generations"
JSON = {"content-type": "application/json"}


def _assert_clean(response: httpx.Response, status: int, code: str | None = None) -> None:
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert set(error) == {"message", "type", "param", "code"}
    if code is not None:
        assert error["code"] == code, error
    for leak in ("Traceback", "/work/", "site-packages", 'File "', "serve_app."):
        assert leak not in response.text


HOSTILE = [
    # name, raw body, status, code
    ("huge valid JSON (900 kB array)", json.dumps([1] * 300_000).encode(), 400, None),
    (
        "huge prompt (900 kB)",
        json.dumps({"prompt": "x" * 900_000}).encode(),
        400,
        "prompt_too_long",
    ),
    ("deep nesting, 100k levels", b"[" * 100_000 + b"]" * 100_000, 400, "invalid_json"),
    (
        "deep nesting in an extra field",
        b'{"prompt":"x","x":' + b"[" * 40 + b"]" * 40 + b"}",
        400,
        "invalid_json",
    ),
    ("prompt is a number", b'{"prompt": 5}', 400, None),
    ("prompt is a list", b'{"prompt": ["a"]}', 400, None),
    ("n is a float", b'{"prompt": "x", "n": 1.5}', 400, None),
    ("n is negative", b'{"prompt": "x", "n": -1}', 400, None),
    ("n is huge", b'{"prompt": "x", "n": 100000000000000000000000}', 400, None),
    ("negative seed", b'{"prompt": "x", "seed": -1}', 400, None),
    ("seed past 2^63", b'{"prompt": "x", "seed": 9223372036854775808}', 400, None),
    ("negative steps", b'{"prompt": "x", "num_inference_steps": -3}', 400, None),
    ("negative guidance", b'{"prompt": "x", "guidance_scale": -1}', 400, None),
    ("NaN guidance", b'{"prompt": "x", "guidance_scale": NaN}', 400, "invalid_json"),
    ("Infinity guidance", b'{"prompt": "x", "guidance_scale": Infinity}', 400, "invalid_json"),
    ("-Infinity seed", b'{"prompt": "x", "seed": -Infinity}', 400, "invalid_json"),
    ("1e999 guidance", b'{"prompt": "x", "guidance_scale": 1e999}', 400, None),
    ("lone high surrogate", b'{"prompt": "\\ud800"}', 400, "invalid_json"),
    ("lone low surrogate in a key", b'{"prompt": "x", "\\udc00": 1}', 400, "invalid_json"),
    ("invalid UTF-8", b'{"prompt": "\xff\xfe"}', 400, "invalid_json"),
    (
        "NUL only prompt over the limit",
        json.dumps({"prompt": "\x00" * 5000}).encode(),
        400,
        "prompt_too_long",
    ),
    ("Together: negative width", b'{"prompt": "x", "width": -64, "height": 64}', 400, None),
    ("Together: huge area", b'{"prompt": "x", "width": 2048, "height": 2048}', 400, None),
    (
        "Together: n x size over the request cap",
        b'{"prompt": "x", "width": 2048, "height": 1024, "n": 10}',
        400,
        "too_many_pixels",
    ),
    (
        "OpenAI: n x size over the request cap",
        b'{"prompt": "x", "n": 10, "size": "1792x1024"}',
        400,
        "too_many_pixels",
    ),
    (
        "negative_prompt over the limit",
        json.dumps({"prompt": "x", "negative_prompt": "y" * 4001}).encode(),
        400,
        "prompt_too_long",
    ),
    ("model is an object", b'{"prompt": "x", "model": {"id": 1}}', 400, None),
    ("body is null", b"null", 400, None),
    ("duplicate keys, the last wins and is bad", b'{"prompt": "x", "n": 1, "n": 0}', 400, None),
]


@pytest.mark.parametrize(
    "body,status,code", [case[1:] for case in HOSTILE], ids=[case[0] for case in HOSTILE]
)
def test_hostile_body(http: httpx.Client, body: bytes, status: int, code: str | None) -> None:
    _assert_clean(http.post(GEN, content=body, headers=JSON), status, code)


@pytest.mark.parametrize(
    "prompt", ["a\x00b", "\u202eevil\u202c", "👩‍👩‍👧‍👦" * 50, "\ufeffbom", "e\u0301" * 100]
)
def test_odd_but_valid_unicode_generates(http: httpx.Client, prompt: str) -> None:
    response = http.post(GEN, json={"prompt": prompt, "size": "256x256", "seed": 3})
    assert response.status_code == 200, response.text


def test_a1111_hostile_bodies_use_its_shape(http: httpx.Client) -> None:
    from tests.integration.conftest import A1111_PASSWORD, A1111_USER

    auth = (A1111_USER, A1111_PASSWORD)
    for body in (b'{"prompt": "x", "steps": NaN}', b"[" * 50_000 + b"]" * 50_000):
        response = http.post("/sdapi/v1/txt2img", content=body, headers=JSON, auth=auth)
        assert 400 <= response.status_code < 500, response.text
        assert set(response.json()) == {"error", "detail", "body", "errors"}


def _raw_exchange(base_url: str, head: bytes, body_part: bytes) -> tuple[bytes, float]:
    """Send the head and part of a body, then read what the server answers."""
    parts = urlsplit(base_url)
    started = time.monotonic()
    with socket.create_connection((parts.hostname, parts.port), timeout=30) as sock:
        sock.sendall(head)
        with contextlib.suppress(OSError):  # the server may close early; its answer stays
            sock.sendall(body_part)
        answer = b""
        while b"\r\n\r\n" not in answer:
            chunk = sock.recv(65536)
            if not chunk:
                break
            answer += chunk
    return answer, time.monotonic() - started


def test_a_100_mb_declared_body_is_refused_before_it_is_read(base_url: str) -> None:
    head = (
        f"POST {GEN} HTTP/1.1\r\nHost: test\r\nContent-Type: application/json\r\n"
        f"Content-Length: {100 * 1024 * 1024}\r\n\r\n"
    ).encode()
    answer, took = _raw_exchange(base_url, head, b'{"prompt": "' + b"x" * 65536)
    assert answer.startswith(b"HTTP/1.1 413"), answer[:200]
    assert took < 30  # only 64 kB of the 100 MB were ever sent


def test_a_streamed_body_is_cut_off_at_the_limit(base_url: str) -> None:
    head = (
        f"POST {GEN} HTTP/1.1\r\nHost: test\r\nContent-Type: application/json\r\n"
        "Transfer-Encoding: chunked\r\n\r\n"
    ).encode()
    chunk = b"x" * 65536
    body = (b"%x\r\n" % len(chunk) + chunk + b"\r\n") * 24  # 1.5 MB of a never-ending body
    answer, _ = _raw_exchange(base_url, head, body)
    assert answer.startswith(b"HTTP/1.1 413"), answer[:200]


def test_a_100_mb_body_via_httpx_is_413(http: httpx.Client) -> None:
    def body() -> object:
        block = b"x" * (1 << 20)
        for _ in range(100):
            yield block

    try:
        response = http.post(GEN, content=body(), headers=JSON)
    except (httpx.WriteError, httpx.RemoteProtocolError, httpx.ReadError):
        return  # the server answered 413 and closed while the client was still sending
    _assert_clean(response, 413, "request_too_large")
