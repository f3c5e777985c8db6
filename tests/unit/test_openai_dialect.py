"""OpenAI request -> canonical job and encode spec, and the response shape."""

from __future__ import annotations

from typing import Any

import pytest

from common.errors import APIError
from common.job import EncodedImage
from serve_app.dialects.openai import images_response, parse_generate, to_encode_spec, to_job
from tests.support.models import dialect_model

MODEL = dialect_model()


def job_for(**body: Any):
    return to_job(parse_generate({"prompt": "a cat", **body}), MODEL, "req-1")


def test_defaults_come_from_the_model() -> None:
    job = job_for()
    assert (job.steps, job.guidance) == (20, 5.0)
    assert (job.gen_width, job.gen_height) == (128, 128)
    assert job.n == 1 and job.negative_prompt is None


def test_extensions_override_defaults() -> None:
    job = job_for(num_inference_steps=7, guidance_scale=0.0, negative_prompt="blurry", seed=9, n=3)
    assert (job.steps, job.guidance, job.negative_prompt) == (7, 0.0, "blurry")
    assert job.seeds == (9, 10, 11)


def test_wide_size_generates_at_the_scaled_bucket() -> None:
    job = job_for(size="1792x1024")
    assert (job.gen_width, job.gen_height) == (168, 96)


@pytest.mark.parametrize(
    "body,param",
    [
        ({"n": 5}, "n"),
        ({"num_inference_steps": 51}, "num_inference_steps"),
        ({"stream": True, "response_format": "url"}, "response_format"),
        ({"background": "transparent"}, "background"),
        ({"prompt": "x" * 4001}, "prompt"),
    ],
)
def test_model_limits(body: dict[str, Any], param: str) -> None:
    with pytest.raises(APIError) as info:
        job_for(**body)
    assert (info.value.status, info.value.param) == (400, param)


def test_encode_spec_keeps_the_requested_size() -> None:
    req = parse_generate({"prompt": "x", "size": "256x256", "output_format": "webp"})
    spec = to_encode_spec(req, MODEL, "r", "http://h/")
    assert (spec.width, spec.height, spec.output_format) == (256, 256, "webp")


def test_response_shape_matches_openai() -> None:
    req = parse_generate({"prompt": "x", "size": "1536x1024", "output_format": "jpeg", "n": 2})
    spec = to_encode_spec(req, MODEL, "r", None)
    body = images_response(
        req, spec, [5, 6], [EncodedImage(b64_json="AA=="), EncodedImage(b64_json="AQ==")]
    )
    assert set(body) == {"created", "data", "background", "output_format", "size", "usage"}
    assert body["size"] == "1536x1024" and body["output_format"] == "jpeg"
    assert body["data"] == [{"b64_json": "AA==", "seed": 5}, {"b64_json": "AQ==", "seed": 6}]


def test_response_refuses_a_count_mismatch() -> None:
    req = parse_generate({"prompt": "x", "n": 2})
    with pytest.raises(APIError):
        spec = to_encode_spec(req, MODEL, "r", None)
        images_response(req, spec, [1, 2], [EncodedImage(b64_json="AA==")])


def test_partial_images_only_apply_to_streams() -> None:
    assert job_for(stream=True, partial_images=2).partial_images == 2
    assert job_for(partial_images=2).partial_images == 0
