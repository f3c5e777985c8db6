"""imagine ImageRequest -> canonical job and encode spec, and the ImageResponse shape."""

from __future__ import annotations

import json
from typing import Any

import pytest
from imagine.types.images import ImageRequest, ImageResponse

from common.errors import APIError
from common.job import EncodedImage, ImageEvent
from common.model_config import ModelConfig
from serve_app.dialects import imagine_sdk as imagine
from tests.support.models import dialect_model

MODEL = dialect_model(default_steps=30)


def translate(body: dict[str, Any]):
    req = imagine.parse(body)
    job = imagine.to_job(req, MODEL, "req-1")
    return req, job, imagine.to_encode_spec(req, MODEL, "req-1", "http://h:8000/")


def sdk_body(**kwargs: Any) -> dict[str, Any]:
    """Exactly what the SDK's images_generate posts."""
    params = {"prompt": "a cat", "model": "tiny", "stream": False, **kwargs}
    return ImageRequest(**params).model_dump(exclude_none=True)


def test_sdk_defaults() -> None:
    _, job, spec = translate(sdk_body())
    assert job.negative_prompt == "blurry" and job.seeds == (27,)
    assert (job.steps, job.guidance, job.cache_interval) == (20, 6.5, None)
    assert (spec.width, spec.height, spec.response_format) == (512, 512, "b64_json")
    assert (job.gen_width, job.gen_height) == (64, 64)


def test_absent_fields_take_the_same_defaults() -> None:
    _, job, _ = translate({"prompt": "a cat", "seed_increment": 100})
    assert (job.negative_prompt, job.seeds, job.steps, job.guidance) == ("blurry", (27,), 20, 6.5)


def test_seed_increment_spaces_the_seeds() -> None:
    _, job, _ = translate(sdk_body(n=3, seed=5))
    assert job.seeds == (5, 105, 205)
    _, job, _ = translate(sdk_body(n=3, seed=5, seed_increment=1))
    assert job.seeds == (5, 6, 7)


def test_null_seed_draws_random_seeds() -> None:
    _, job, _ = translate({"prompt": "a cat", "seed": None, "n": 2, "seed_increment": 100})
    assert len(job.seeds) == 2 and all(0 <= s < 2**32 for s in job.seeds)


def test_cache_interval_reaches_the_job_and_its_batching_key() -> None:
    _, cached, _ = translate(sdk_body(cache_interval=3))
    _, plain, _ = translate(sdk_body())
    assert cached.cache_interval == 3 and cached.deep_cache_interval == 3
    assert cached.shape_key != plain.shape_key


@pytest.mark.parametrize(
    "fields,param",
    [
        ({"size": "big"}, "size"),
        ({"size": "4096x4096"}, "size"),
        ({"n": 0}, "n"),
        ({"n": 5}, "n"),
        ({"num_inference_steps": 51}, "num_inference_steps"),
        ({"guidance_scale": -1.0}, "guidance_scale"),
        ({"cache_interval": 0}, "cache_interval"),
        ({"cache_interval": 21}, "cache_interval"),
        ({"response_format": "base64"}, "response_format"),
        ({"seed_increment": -1}, "seed_increment"),
    ],
)
def test_bad_input_is_a_400_naming_the_parameter(fields: dict[str, Any], param: str) -> None:
    body = {"prompt": "a cat", "seed_increment": 100, **fields}
    with pytest.raises(APIError) as info:
        translate(body)
    assert info.value.status == 400 and info.value.param == param
    assert info.value.body()["error"]["type"] == "invalid_request_error"


def test_response_parses_with_the_sdk_model_and_urls_are_host_relative() -> None:
    req, job, _ = translate(sdk_body(n=2, response_format="url"))
    images = [
        EncodedImage(url="http://h:8000/v1/images/files/k0.png?expires=1&signature=s"),
        EncodedImage(url="http://h:8000/v1/images/files/k1.png?expires=1&signature=s"),
    ]
    body = imagine.build_response(req, MODEL, job, images)
    assert body["object"] == "text_to_image" and body["id"] == "req-1"
    assert body["model"] == "tiny" and isinstance(body["created"], int)
    assert body["data"][0]["url"] == "/v1/images/files/k0.png?expires=1&signature=s"
    parsed = ImageResponse(**body)
    assert [d.b64_json for d in parsed.data] == [None, None]


def test_cache_interval_is_refused_on_a_compiled_unet() -> None:
    compiled = ModelConfig.model_validate(
        {**MODEL.model_dump(), "performance": {"compile_unet": True}}
    )
    req = imagine.parse(sdk_body(cache_interval=3))
    with pytest.raises(APIError) as info:
        imagine.to_job(req, compiled, "req-1")
    assert info.value.param == "cache_interval" and "compiled" in info.value.message
    assert imagine.to_job(imagine.parse(sdk_body(cache_interval=1)), compiled, "r").n == 1


def test_stream_asks_for_previews_and_writes_sdk_responses_then_done() -> None:
    req, job, spec = translate(sdk_body(stream=True, n=2, seed=3))
    assert job.partial_images == imagine.IMAGINE_STREAM_PARTIALS
    fmt = imagine.stream_format(req, MODEL, job, spec)
    assert fmt is not None
    images = [EncodedImage(b64_json="AAAA"), EncodedImage(b64_json="BBBB")]
    partial = fmt.frames(ImageEvent("partial", None, partial_index=1), images)
    final = fmt.frames(ImageEvent("final", None), images)
    frames = [*partial, *final, *fmt.end()]
    lines = [frame.removeprefix("data: ").strip() for frame in frames]
    assert all(frame.startswith("data: ") and frame.endswith("\n\n") for frame in frames)
    assert lines[-1] == "[DONE]"
    first, last = (json.loads(line) for line in lines[:2])
    assert first["partial_image_index"] == 1 and "partial_image_index" not in last
    for body in (first, last):
        parsed = ImageResponse(**body)  # what the SDK does with each line
        assert [d.b64_json for d in parsed.data] == ["AAAA", "BBBB"]
        assert [d["seed"] for d in body["data"]] == [3, 103]


def test_stream_error_frame_carries_an_openai_error() -> None:
    req, job, spec = translate(sdk_body(stream=True))
    fmt = imagine.stream_format(req, MODEL, job, spec)
    assert fmt is not None
    frame = fmt.error(APIError("internal", "boom"))
    assert json.loads(frame.removeprefix("data: "))["error"]["message"] == "boom"


def test_no_stream_no_format() -> None:
    req, job, spec = translate(sdk_body())
    assert job.partial_images == 0 and imagine.stream_format(req, MODEL, job, spec) is None
