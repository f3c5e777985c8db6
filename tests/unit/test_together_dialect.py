"""Together request -> canonical job and encode spec, and the response Together's SDK parses."""

from __future__ import annotations

import base64
import io
from typing import Any

import pytest
from PIL import Image

from common.config import ImageInputConfig
from common.errors import APIError
from common.job import EncodedImage
from common.model_config import ModelConfig
from serve_app.dialects import together
from serve_app.dialects.base import Context
from serve_app.inputs.fetch import ImageFetcher
from tests.support.models import dialect_model

MODEL = dialect_model(default_steps=30)


def translate(model: ModelConfig = MODEL, **body: Any):
    req = together.parse({"prompt": "a cat", **body})
    job = together.to_job(req, model, "req-1")
    return req, job, together.to_encode_spec(req, model, "req-1", "http://h/")


def test_defaults() -> None:
    _, job, spec = translate()
    assert job.steps == 20  # Together's default, not the model's 30
    assert job.guidance == 5.0 and job.negative_prompt is None and job.n == 1
    assert (spec.width, spec.height, spec.output_format) == (1024, 1024, "jpeg")
    assert spec.response_format == "b64_json"
    assert (job.gen_width, job.gen_height) == (128, 128)


def test_a_model_that_cannot_do_20_steps_uses_its_own_default() -> None:
    lightning = MODEL.model_copy(update={"default_steps": 4, "max_steps": 8})
    assert translate(lightning)[1].steps == 4


@pytest.mark.parametrize("field", ["guidance", "guidance_scale"])
def test_both_guidance_spellings(field: str) -> None:
    assert translate(**{field: 1.5})[1].guidance == 1.5


def test_fields_map_onto_the_job() -> None:
    _, job, spec = translate(
        steps=7,
        seed=40,
        n=3,
        width=1000,
        height=600,
        negative_prompt="fog",
        output_format="png",
        response_format="url",
    )
    assert (job.steps, job.seeds, job.negative_prompt) == (7, (40, 41, 42), "fog")
    # Free sizes: the client gets exactly its size; generation snaps to multiples of 8.
    assert (spec.width, spec.height, spec.output_format, spec.response_format) == (
        1000,
        600,
        "png",
        "url",
    )
    assert (job.gen_width, job.gen_height) == (120, 72)


@pytest.mark.parametrize(
    "body,param",
    [
        ({"prompt": ""}, "prompt"),
        ({"steps": 0}, "steps"),
        ({"steps": 51}, "steps"),
        ({"n": 5}, "n"),
        ({"width": 32}, "width"),
        ({"width": 4096}, "width"),
        ({"height": 4096}, "height"),
        ({"width": 2048, "height": 2048}, "width"),  # over the 2 MP pixel cap
        ({"output_format": "webp"}, "output_format"),
        ({"response_format": "png"}, "response_format"),
        ({"guidance": 2.0, "guidance_scale": 3.0}, None),
        ({"strength": 0}, "strength"),
        ({"image_loras": [{"path": "no-such-lora", "scale": 1.0}]}, "image_loras[0].path"),
        ({"reference_images": ["https://example.com/a.png"]}, "reference_images"),
        ({"seed": -1}, "seed"),
    ],
)
def test_bad_input_is_a_400_naming_the_parameter(body: dict[str, Any], param: str | None) -> None:
    with pytest.raises(APIError) as info:
        translate(**body)
    assert info.value.status == 400 and info.value.param == param
    assert info.value.body()["error"]["type"] == "invalid_request_error"


def png_data_url(width: int, height: int) -> str:
    buffer = io.BytesIO()
    Image.new("RGB", (width, height), (200, 10, 10)).save(buffer, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode()


async def test_image_url_and_strength_become_an_img2img_job() -> None:
    limits = ImageInputConfig()
    ctx = Context(request_id="req-1", images=limits, fetcher=ImageFetcher(limits))
    body = {"prompt": "x", "image_url": png_data_url(96, 64), "strength": 0.3, "seed": 4}
    plan = await together.translate(together.parse(body), MODEL, ctx)
    assert (plan.job.mode, plan.job.strength, plan.job.seeds) == ("img2img", 0.3, (4,))
    assert plan.job.init_image.shape == (plan.job.gen_height, plan.job.gen_width, 3)
    # The init image is stretched to the generation size: its red fills every pixel.
    assert plan.job.init_image[..., 0].min() == 200
    # Without strength, the configured img2img default applies.
    body.pop("strength")
    default = await together.translate(together.parse(body), MODEL, ctx)
    assert default.job.strength == limits.img2img_strength


def test_response_shape() -> None:
    req, job, _ = translate(n=2, seed=5)
    body = together.build_response(
        req, MODEL, job, [EncodedImage(b64_json="AA=="), EncodedImage(b64_json="AQ==")]
    )
    assert body == {
        "id": "req-1",
        "model": "tiny",
        "object": "list",
        "data": [
            {"index": 0, "type": "b64_json", "b64_json": "AA==", "seed": 5},
            {"index": 1, "type": "b64_json", "b64_json": "AQ==", "seed": 6},
        ],
    }
    url_body = together.build_response(
        req, MODEL, job, [EncodedImage(url="u0"), EncodedImage(url="u1")]
    )
    assert url_body["data"][1] == {"index": 1, "type": "url", "url": "u1", "seed": 6}
