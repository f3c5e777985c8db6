"""OpenAI's non-schema rules: free sizes, the default response format, usage, nulls."""

from __future__ import annotations

from typing import Any

import pytest

from common.errors import APIError
from common.job import EncodedImage
from serve_app.dialects.openai import parse_generate, to_encode_spec, to_job
from serve_app.dialects.openai_rules import image_tokens, prompt_tokens, response_format, usage
from tests.support.models import dialect_model

MODEL = dialect_model()


def spec_for(**body: Any):
    req = parse_generate({"prompt": "a cat", **body})
    return to_job(req, MODEL, "r"), to_encode_spec(req, MODEL, "r", "http://h/")


def test_free_size_is_the_exact_output_and_snaps_the_generation_size() -> None:
    job, spec = spec_for(size="1536x864")
    assert (spec.width, spec.height) == (1536, 864)
    assert (job.gen_width % 8, job.gen_height % 8) == (0, 0)
    assert job.gen_width / job.gen_height == pytest.approx(1536 / 864, rel=0.1)


@pytest.mark.parametrize(
    "size,rule",
    [
        ("1000x1000", "multiple of 16"),
        ("3056x1008", "aspect ratio must be at most 3:1"),
        ("4096x2048", "longest side must be at most 3840"),
        ("2048x2048", "pixels"),  # within gpt-image-2's rules, over this model's cap
        ("big", "WIDTHxHEIGHT"),
        ("0x16", "at least 16"),
    ],
)
def test_a_size_outside_the_rules_is_a_400_stating_the_rule(size: str, rule: str) -> None:
    with pytest.raises(APIError) as info:
        spec_for(size=size)
    assert (info.value.status, info.value.param) == (400, "size")
    assert rule in info.value.message


@pytest.mark.parametrize(
    "body,expected",
    [
        ({"model": "dall-e-2"}, "url"),
        ({"model": "DALL-E-3"}, "url"),
        ({"model": "gpt-image-1"}, "b64_json"),
        ({}, "b64_json"),
        ({"model": "dall-e-3", "response_format": "b64_json"}, "b64_json"),
        ({"model": "dall-e-3", "stream": True}, "b64_json"),
    ],
)
def test_default_response_format_follows_openai(body: dict[str, Any], expected: str) -> None:
    assert response_format(parse_generate({"prompt": "x", **body})) == expected
    assert spec_for(**body)[1].response_format == expected


def test_nulls_are_defaults_in_json_bodies() -> None:
    req = parse_generate(
        {"prompt": "x", "n": None, "size": None, "response_format": None, "quality": None}
    )
    assert (req.n, req.size, req.response_format, req.quality) == (1, "auto", None, None)


@pytest.mark.parametrize(
    "size,quality,tokens",
    [
        ((1024, 1024), "low", 272),
        ((1024, 1536), "low", 408),
        ((1536, 1024), "low", 400),
        ((1024, 1024), "medium", 1056),
        ((1024, 1536), "medium", 1584),
        ((1536, 1024), "high", 6208),
        ((1024, 1024), None, 1056),
    ],
)
def test_image_tokens_match_openais_table(
    size: tuple[int, int], quality: str | None, tokens: int
) -> None:
    assert image_tokens(*size, quality) == tokens


def test_usage_counts_prompt_and_images() -> None:
    assert prompt_tokens("a red cat, sitting!") == 6  # a red cat , sitting !
    result = usage("a red cat", 2, (1024, 1024), "low")
    assert (result.input_tokens, result.output_tokens, result.total_tokens) == (3, 544, 547)
    assert result.input_tokens_details.text_tokens == 3


def test_a_null_is_the_default_in_every_json_dialect() -> None:
    from serve_app.dialects import a1111, imagine_api, imagine_sdk, together
    from serve_app.dialects.detect import detect

    together_req = together.parse({"prompt": "x", "width": None, "n": None, "steps": None})
    assert (together_req.width, together_req.n) == (1024, 1)
    assert imagine_sdk.parse({"prompt": "x", "seed": None}).seed is None
    assert imagine_api.parse_imagine({"name": "a", "prompt": "x", "size": None}).size == "1024x1024"
    a1111_req = a1111.parse({"prompt": "x", "width": None, "script_name": None})
    assert a1111_req.width == 512
    # A null Together-only field is no dialect signal.
    assert detect({}, {"prompt": "x", "steps": None, "quality": "low"}) == "openai"


def test_the_completed_stream_event_carries_usage_and_the_request_fields() -> None:
    import json

    from common.job import ImageEvent
    from serve_app.dialects.openai import request_usage
    from serve_app.streaming.openai import OpenAIStream

    req = parse_generate({"prompt": "a cat", "size": "1536x1024", "stream": True})
    job, spec = to_job(req, MODEL, "r"), to_encode_spec(req, MODEL, "r", None)
    stream = OpenAIStream("image_generation", job, spec, req.quality, request_usage(req, spec))
    [frame] = stream.frames(ImageEvent("final", None), [EncodedImage(b64_json="AA==")])
    data = json.loads(frame.split("data: ", 1)[1])
    assert data["type"] == "image_generation.completed"
    assert (data["size"], data["quality"], data["background"]) == ("1536x1024", "auto", "opaque")
    assert data["output_format"] == "png"
    assert data["usage"] == {
        "input_tokens": 2,
        "input_tokens_details": {"image_tokens": 0, "text_tokens": 2},
        "output_tokens": 1568,
        "total_tokens": 1570,
    }
