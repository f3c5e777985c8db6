"""Bad input over real HTTP: OpenAI-shaped errors with the right status and param."""

from __future__ import annotations

from typing import Any

import httpx
import openai
import pytest

from tests.support.http import assert_error

ROUTE = "/v1/images/generations"


@pytest.mark.parametrize(
    "payload,status,param,error_type",
    [
        ({}, 400, "prompt", "invalid_request_error"),
        ({"prompt": ""}, 400, "prompt", "invalid_request_error"),
        ({"prompt": "x", "n": 0}, 400, "n", "invalid_request_error"),
        ({"prompt": "x", "n": 11}, 400, "n", "invalid_request_error"),
        ({"prompt": "x", "size": "640x481"}, 400, "size", "invalid_request_error"),
        (
            {"prompt": "x", "response_format": "png"},
            400,
            "response_format",
            "invalid_request_error",
        ),
        ({"prompt": "x", "output_format": "gif"}, 400, "output_format", "invalid_request_error"),
        (
            {"prompt": "x", "output_compression": 500},
            400,
            "output_compression",
            "invalid_request_error",
        ),
        ({"prompt": "x", "background": "clear"}, 400, "background", "invalid_request_error"),
        (
            {"prompt": "x", "background": "transparent", "output_format": "jpeg"},
            400,
            None,
            "invalid_request_error",
        ),
        ({"prompt": "x", "background": "transparent"}, 400, "background", "invalid_request_error"),
        (
            {"prompt": "x", "stream": True, "response_format": "url"},
            400,
            "response_format",
            "invalid_request_error",
        ),
        ({"prompt": "x", "seed": -5}, 400, "seed", "invalid_request_error"),
        (
            {"prompt": "x", "num_inference_steps": 201},
            400,
            "num_inference_steps",
            "invalid_request_error",
        ),
        ({"prompt": "x", "guidance_scale": "lots"}, 400, "guidance_scale", "invalid_request_error"),
        ({"prompt": "x" * 4001}, 400, "prompt", "invalid_request_error"),
        ({"prompt": "x", "model": "dall-e-9"}, 404, "model", "invalid_request_error"),
    ],
)
def test_bad_payloads(
    http: httpx.Client, payload: dict[str, Any], status: int, param: str | None, error_type: str
) -> None:
    assert_error(http.post(ROUTE, json=payload), status, param, error_type)


@pytest.mark.parametrize("body", [b"{not json", b"", b"[1, 2]", b"\xff\xfe", b'"prompt"'])
def test_unparseable_bodies_are_400(http: httpx.Client, body: bytes) -> None:
    response = http.post(ROUTE, content=body, headers={"content-type": "application/json"})
    assert_error(response, 400, None, "invalid_request_error")


def test_oversized_body_is_413(http: httpx.Client) -> None:
    response = http.post(ROUTE, json={"prompt": "x" * (2 << 20)})
    assert_error(response, 413, None, "invalid_request_error")


def test_unknown_route_is_404(http: httpx.Client) -> None:
    assert_error(http.get("/v1/nothing"), 404, None, "invalid_request_error")


def test_wrong_method_is_405(http: httpx.Client) -> None:
    assert_error(http.get(ROUTE), 405, None, "invalid_request_error")


def test_malformed_image_key_is_404(http: httpx.Client) -> None:
    assert_error(http.get("/v1/images/files/not-a-key"), 404, None, "invalid_request_error")


def test_unsigned_image_is_403_whether_or_not_it_exists(http: httpx.Client) -> None:
    # The signature is checked first, so a probe learns nothing about which keys exist.
    response = http.get("/v1/images/files/" + "a" * 32 + ".png?expires=1&signature=x")
    assert_error(response, 403, None, "permission_error")


def test_unknown_model_raises_not_found_in_the_sdk(client: openai.OpenAI) -> None:
    with pytest.raises(openai.NotFoundError) as info:
        client.images.generate(prompt="x", model="no-such-model")
    assert info.value.param == "model" and info.value.code == "model_not_found"


def test_bad_request_raises_in_the_sdk(client: openai.OpenAI) -> None:
    with pytest.raises(openai.BadRequestError) as info:
        client.images.generate(prompt="x", n=20)
    assert info.value.param == "n" and info.value.status_code == 400


def test_server_keeps_serving_after_errors(client: openai.OpenAI) -> None:
    result = client.images.generate(prompt="still alive", size="256x256")
    assert result.data[0].b64_json
