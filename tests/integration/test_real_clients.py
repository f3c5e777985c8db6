"""Real clients with their shipped defaults (issue 14), end to end through Ray Serve.

- Open WebUI's edit with its default ``IMAGE_EDIT_MODEL`` (``""``) and with no model;
- every OpenAI model name a current client sends, through the openai SDK, and
  ``/v1/models`` listing them;
- the strict JSON type table of every JSON dialect (400, ``param``, the type named);
- Open WebUI's A1111 default ``steps: 50`` on a model whose ``max_steps`` is lower.
"""

from __future__ import annotations

import base64
import io
import json
import uuid
from typing import Any

import httpx
import openai
import pytest
from PIL import Image

from tests.support.http import assert_error, webui_auth
from tests.support.images import decode_b64

OPENAI_MODEL_NAMES = [
    "dall-e-2",
    "dall-e-3",
    "gpt-image-1",
    "gpt-image-1.5",
    "gpt-image-1-mini",
    "gpt-image-2",
    "chatgpt-image-latest",
]
FAST = {"num_inference_steps": 4}


def png(width: int, height: int) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (width, height), (30, 120, 200)).save(buffer, format="PNG")
    return buffer.getvalue()


@pytest.mark.parametrize("model", ["", None], ids=["empty", "absent"])
def test_open_webui_edit_with_its_default_edit_model(http: httpx.Client, model: str | None):
    """Open WebUI posts IMAGE_EDIT_MODEL="" as an empty form field: the default model."""
    data = {"prompt": "make it red", "n": "1", "size": "256x256", "response_format": "b64_json",
            "num_inference_steps": "4"}  # fmt: skip
    if model is not None:
        data["model"] = model
    files = [("image[]", (f"{uuid.uuid4()}.png", png(64, 64), "image/png"))]
    response = http.post("/v1/images/edits", data=data, files=files)
    assert response.status_code == 200, response.text
    assert response.headers["x-imagegen-model"] == "tiny-sdxl"
    assert decode_b64(response.json()["data"][0]["b64_json"]).size == (256, 256)


def test_openai_sdk_edit_with_an_empty_model(client: openai.OpenAI) -> None:
    raw = client.images.with_raw_response.edit(
        image=("in.png", png(64, 64), "image/png"),
        prompt="make it red",
        model="",
        size="256x256",
        extra_body=FAST,
    )
    assert raw.headers["x-imagegen-model"] == "tiny-sdxl"
    assert decode_b64(raw.parse().data[0].b64_json).size == (256, 256)


def test_unknown_nonempty_model_is_still_a_404(http: httpx.Client) -> None:
    response = http.post("/v1/images/generations", json={"prompt": "x", "model": "dall-e-9"})
    assert_error(response, 404, "model", "invalid_request_error")
    assert response.json()["error"]["code"] == "model_not_found"


@pytest.mark.parametrize("name", OPENAI_MODEL_NAMES)
def test_every_openai_model_name_generates(client: openai.OpenAI, name: str) -> None:
    raw = client.images.with_raw_response.generate(
        prompt="a fox", model=name, size="256x256", extra_body={**FAST, "seed": 5}
    )
    assert raw.headers["x-imagegen-model"] == "tiny-sdxl"
    result = raw.parse()
    assert [item.model_extra["seed"] for item in result.data] == [5]
    if name.startswith("dall-e"):  # OpenAI's default response_format there is url
        assert result.data[0].b64_json is None
        download = httpx.get(result.data[0].url, timeout=30)
        assert Image.open(io.BytesIO(download.content)).size == (256, 256)
    else:
        assert decode_b64(result.data[0].b64_json).size == (256, 256)


def test_models_list_every_openai_model_name(client: openai.OpenAI) -> None:
    cards = {model.id: model for model in client.models.list()}
    for name in OPENAI_MODEL_NAMES:
        assert cards[name].model_extra["root"] == "tiny-sdxl", name
        assert client.models.retrieve(name).id == name


# (route, headers, base body, field, wrong value, expected type, the value's type)
GENERATIONS = "/v1/images/generations"
TOGETHER = {"x-imagegen-dialect": "together"}
IMAGINE = {"x-imagegen-dialect": "imagine"}
STRICT_CASES = [
    (GENERATIONS, {}, {}, "n", "3", "an integer", "a string"),
    (GENERATIONS, {}, {}, "n", 2.5, "an integer", "a decimal"),
    (GENERATIONS, {}, {}, "n", True, "an integer", "a boolean"),
    (GENERATIONS, {}, {}, "seed", "7", "an integer", "a string"),
    (GENERATIONS, {}, {}, "num_inference_steps", 4.0, "an integer", "a decimal"),
    (GENERATIONS, {}, {}, "guidance_scale", "5", "a number", "a string"),
    (GENERATIONS, {}, {}, "guidance_scale", False, "a number", "a boolean"),
    (GENERATIONS, {}, {}, "partial_images", "2", "an integer", "a string"),
    (GENERATIONS, {}, {}, "output_compression", 50.5, "an integer", "a decimal"),
    (GENERATIONS, {}, {}, "stream", "true", "a boolean", "a string"),
    (GENERATIONS, {}, {}, "stream", 1, "a boolean", "an integer"),
    (GENERATIONS, TOGETHER, {}, "steps", "4", "an integer", "a string"),
    (GENERATIONS, TOGETHER, {}, "width", 512.0, "an integer", "a decimal"),
    (GENERATIONS, TOGETHER, {}, "seed", True, "an integer", "a boolean"),
    (GENERATIONS, TOGETHER, {}, "guidance", "3.5", "a number", "a string"),
    (GENERATIONS, IMAGINE, {}, "n", "2", "an integer", "a string"),
    (GENERATIONS, IMAGINE, {}, "seed_increment", 1.5, "an integer", "a decimal"),
    (GENERATIONS, IMAGINE, {}, "guidance_scale", True, "a number", "a boolean"),
    (GENERATIONS, IMAGINE, {}, "stream", "false", "a boolean", "a string"),
    ("/v1/images/imagine", {}, {"name": "n"}, "seed", "1", "an integer", "a string"),
    ("/v1/images/imagine", {}, {"name": "n"}, "prompt", 5, "a string", "an integer"),
]


@pytest.mark.parametrize(
    "route,headers,base,field,value,expected,got",
    STRICT_CASES,
    ids=[f"{h.get('x-imagegen-dialect', r)}-{f}-{v!r}" for r, h, _, f, v, _, _ in STRICT_CASES],
)
def test_json_types_are_strict(
    http: httpx.Client,
    route: str,
    headers: dict[str, str],
    base: dict[str, Any],
    field: str,
    value: Any,
    expected: str,
    got: str,
) -> None:
    body = {"prompt": "x", **base, field: value}
    response = http.post(route, json=body, headers=headers)
    assert_error(response, 400, field, "invalid_request_error")
    error = response.json()["error"]
    assert error["code"] == "invalid_type"
    assert error["message"] == (
        f"Invalid type for '{field}': expected {expected}, but got {got} instead."
    )


def test_an_integer_guidance_is_a_number(client: openai.OpenAI) -> None:
    result = client.images.generate(
        prompt="a fox", size="256x256", extra_body={**FAST, "guidance_scale": 0, "seed": 1}
    )
    assert result.data[0].model_extra["seed"] == 1


def test_open_webui_a1111_default_steps_are_clamped(http: httpx.Client) -> None:
    """Open WebUI sends steps=50; tiny-sdxl-4step allows 8: it runs 8 and says so."""
    body = {"prompt": "a castle", "batch_size": 1, "width": 256, "height": 256, "steps": 50,
            "override_settings": {"sd_model_checkpoint": "tiny-sdxl-4step"}}  # fmt: skip
    response = http.post("/sdapi/v1/txt2img", json=body, headers=webui_auth())
    assert response.status_code == 200, response.text
    assert response.headers["x-imagegen-model"] == "tiny-sdxl-4step"
    payload = response.json()
    image = Image.open(io.BytesIO(base64.b64decode(payload["images"][0])))
    assert (image.format, image.size) == ("PNG", (256, 256))
    info = json.loads(payload["info"])
    assert info["steps"] == 8
    assert info["extra_generation_params"] == {"Steps clamped": "50 -> 8 (the model's max_steps)"}
    assert "Steps: 8," in info["infotexts"][0]
