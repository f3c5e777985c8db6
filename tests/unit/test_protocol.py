"""Request validation: what is accepted, what is refused, and which param is named."""

from __future__ import annotations

from typing import Any

import pytest

from common.errors import APIError
from common.sizes import OPENAI_SIZES
from serve_app.dialects.openai import parse_generate
from serve_app.protocol.openai import ImageGenerateRequest


def test_defaults_match_openai() -> None:
    req = parse_generate({"prompt": "a cat"})
    assert (req.n, req.size, req.response_format, req.output_format) == (
        1,
        "auto",
        None,  # resolved per model: url for dall-e-2/3, b64_json otherwise
        "png",
    )
    assert req.background == "auto" and req.stream is False and req.seed is None


def test_every_openai_field_is_accepted() -> None:
    body = {
        "prompt": "a cat",
        "model": "dall-e-3",
        "n": 2,
        "size": "1792x1024",
        "response_format": "url",
        "output_format": "webp",
        "output_compression": 80,
        "background": "opaque",
        "quality": "hd",
        "style": "vivid",
        "moderation": "low",
        "user": "u-1",
        "stream": False,
        "partial_images": 2,
        "negative_prompt": "blurry",
        "seed": 7,
        "num_inference_steps": 12,
        "guidance_scale": 3.5,
    }
    req = parse_generate(body)
    assert req.model_dump(exclude_none=True) == body


def test_unknown_fields_are_kept_and_reported() -> None:
    req = parse_generate({"prompt": "a cat", "frame_count": 3, "svg": True})
    assert req.unknown_fields() == ["frame_count", "svg"]


@pytest.mark.parametrize("size", OPENAI_SIZES)
def test_every_openai_size_is_valid(size: str) -> None:
    assert parse_generate({"prompt": "x", "size": size}).size == size


@pytest.mark.parametrize(
    "body,param",
    [
        ({}, "prompt"),
        ({"prompt": ""}, "prompt"),
        ({"prompt": 5}, "prompt"),
        ({"prompt": "x", "n": 0}, "n"),
        ({"prompt": "x", "n": 11}, "n"),
        ({"prompt": "x", "n": "two"}, "n"),
        ({"prompt": "x", "size": 1024}, "size"),
        ({"prompt": "x", "response_format": "base64"}, "response_format"),
        ({"prompt": "x", "output_format": "gif"}, "output_format"),
        ({"prompt": "x", "output_compression": 101}, "output_compression"),
        ({"prompt": "x", "output_compression": -1}, "output_compression"),
        ({"prompt": "x", "background": "green"}, "background"),
        ({"prompt": "x", "partial_images": 4}, "partial_images"),
        ({"prompt": "x", "seed": -1}, "seed"),
        ({"prompt": "x", "seed": 2**63}, "seed"),
        ({"prompt": "x", "num_inference_steps": 0}, "num_inference_steps"),
        ({"prompt": "x", "guidance_scale": -0.5}, "guidance_scale"),
        ({"prompt": "x", "stream": "maybe"}, "stream"),
    ],
)
def test_bad_fields_name_their_param(body: dict[str, Any], param: str) -> None:
    with pytest.raises(APIError) as info:
        parse_generate(body)
    err = info.value
    assert (err.status, err.param) == (400, param)
    assert err.body()["error"]["type"] == "invalid_request_error"
    assert param in err.message


def test_transparent_jpeg_is_refused() -> None:
    with pytest.raises(APIError) as info:
        parse_generate({"prompt": "x", "background": "transparent", "output_format": "jpeg"})
    assert info.value.status == 400
    assert "transparent" in info.value.message and "jpeg" in info.value.message


def test_seed_range_accounts_for_n() -> None:
    with pytest.raises(APIError) as info:
        parse_generate({"prompt": "x", "seed": 2**63 - 2, "n": 3})
    assert "seed" in info.value.message


@pytest.mark.parametrize("body", [[], "text", 3, None])
def test_body_must_be_an_object(body: Any) -> None:
    with pytest.raises(APIError) as info:
        parse_generate(body)
    assert info.value.status == 400


def test_request_model_is_lenient_but_typed() -> None:
    fields = ImageGenerateRequest.model_fields
    assert {"quality", "style", "moderation", "user"} <= set(fields)
    assert ImageGenerateRequest.model_config["extra"] == "allow"
