"""Image-to-image against one running Ray Serve app: the openai SDK's edits (one file, a
list, a mask, streaming) and variations, Open WebUI's edit payload, the together SDK's
image_url (data URL and a local HTTP server), the SSRF table, A1111 img2img, and the
bad-upload table."""

from __future__ import annotations

import base64
import io
import json
import uuid
from collections.abc import Iterator
from typing import Any

import httpx
import numpy as np
import openai
import pytest
import together
from PIL import Image

from tests.integration.conftest import IMAGE_SERVER_HOST, TEST_UPLOAD_LIMIT
from tests.support.http import webui_auth
from tests.support.image_server import ImageServer, image_server
from tests.support.images import decode_b64, pixels

FAST = {"num_inference_steps": 4}


def png(width: int, height: int, seed: int = 0, smooth: bool = False) -> bytes:
    if smooth:  # a gradient: survives resizing, so "close to the input" is meaningful
        x = np.linspace(0, 255, width)[None, :, None]
        y = np.linspace(0, 255, height)[:, None, None]
        array = np.concatenate([x + 0 * y, y + 0 * x, (x + y) / 2], axis=2).astype(np.uint8)
    else:
        array = np.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format="PNG")
    return buffer.getvalue()


def alpha_mask(width: int, height: int) -> tuple[bytes, np.ndarray]:
    """OpenAI's mask: transparent (alpha 0) in the middle square = repaint there."""
    rgba = np.full((height, width, 4), 255, np.uint8)
    repaint = np.zeros((height, width), bool)
    repaint[height // 4 : 3 * height // 4, width // 4 : 3 * width // 4] = True
    rgba[repaint, 3] = 0
    buffer = io.BytesIO()
    Image.fromarray(rgba, "RGBA").save(buffer, format="PNG")
    return buffer.getvalue(), repaint


@pytest.fixture(scope="module")
def together_client(base_url: str) -> together.Together:
    return together.Together(base_url=base_url, api_key="unused", max_retries=0, timeout=120)


@pytest.fixture(scope="module")
def allowed_server() -> Iterator[ImageServer]:
    with image_server(IMAGE_SERVER_HOST) as server:
        yield server


@pytest.fixture(scope="module")
def internal_server() -> Iterator[ImageServer]:
    """Stands for a service on the server's own network: it must never be reached."""
    with image_server("127.0.0.1") as server:
        yield server


def test_sdk_edit_with_one_file(client: openai.OpenAI) -> None:
    result = client.images.edit(
        image=("in.png", png(300, 200), "image/png"),
        prompt="a red hat",
        size="512x512",
        extra_body={**FAST, "seed": 3},
    )
    [item] = result.data
    assert decode_b64(item.b64_json).size == (512, 512)
    assert result.size == "512x512" and item.model_extra["seed"] == 3  # type: ignore[index]


def test_sdk_edit_with_a_list_of_files_sent_as_image_array(client: openai.OpenAI) -> None:
    images = [("a.png", png(64, 64, 1), "image/png"), ("b.png", png(64, 64, 2), "image/png")]
    result = client.images.edit(
        image=images, prompt="merge", n=2, size="256x256", extra_body={**FAST, "seed": 9}
    )
    assert [decode_b64(d.b64_json).size for d in result.data] == [(256, 256)] * 2
    # The first image is the init image: sending it alone gives the same first image.
    alone = client.images.edit(
        image=images[0], prompt="merge", size="256x256", extra_body={**FAST, "seed": 9}
    )
    diff = np.abs(
        pixels(decode_b64(alone.data[0].b64_json)) - pixels(decode_b64(result.data[0].b64_json))
    )
    assert diff.max() <= 2


def test_sdk_inpaint_keeps_the_pixels_outside_the_mask(client: openai.OpenAI) -> None:
    source = png(512, 512, smooth=True)
    mask, repaint = alpha_mask(512, 512)
    result = client.images.edit(
        image=("in.png", source, "image/png"),
        mask=("mask.png", mask, "image/png"),
        prompt="a window",
        size="512x512",
        extra_body={**FAST, "seed": 1},
    )
    out = pixels(decode_b64(result.data[0].b64_json))
    original = pixels(Image.open(io.BytesIO(source)))
    diff = np.abs(out - original).max(axis=2)
    assert out.shape == (512, 512, 3)
    assert diff[~repaint].max() <= 2, "pixels outside the mask moved"
    assert diff[repaint].mean() > 20, "the masked area was not repainted"


def test_sdk_streamed_edit_sends_image_edit_events(client: openai.OpenAI) -> None:
    stream = client.images.edit(
        image=("in.png", png(64, 64), "image/png"),
        prompt="x",
        size="256x256",
        stream=True,
        partial_images=1,
        extra_body={"num_inference_steps": 8, "strength": 1.0},
    )
    types = [event.type for event in stream]
    assert types == ["image_edit.partial_image", "image_edit.completed"]


def test_sdk_variations(client: openai.OpenAI) -> None:
    result = client.images.create_variation(
        image=("in.png", png(128, 128), "image/png"), n=2, size="256x256", extra_body=FAST
    )
    assert [decode_b64(d.b64_json).size for d in result.data] == [(256, 256)] * 2


def test_open_webui_edit_payload(http: httpx.Client) -> None:
    """What Open WebUI's image_edits() posts: form fields as strings, one image as image[]."""
    data = {"model": "gpt-image-1", "prompt": "make it blue", "n": "1", "size": "512x512",
            "response_format": "b64_json"}  # fmt: skip
    files = [("image[]", (f"{uuid.uuid4()}.png", png(96, 96), "image/png"))]
    response = http.post("/v1/images/edits", data=data, files=files)
    assert response.status_code == 200, response.text
    assert decode_b64(response.json()["data"][0]["b64_json"]).size == (512, 512)


def test_together_image_url_as_a_data_url(together_client: together.Together) -> None:
    url = "data:image/png;base64," + base64.b64encode(png(64, 64)).decode()
    result = together_client.images.generate(
        model="tiny-sdxl", prompt="x", image_url=url, width=320, height=256, steps=4, seed=2
    )
    assert decode_b64(result.data[0].b64_json).size == (320, 256)  # type: ignore[union-attr]


def test_together_image_url_from_a_local_server(
    together_client: together.Together, allowed_server: ImageServer
) -> None:
    result = together_client.images.generate(
        model="tiny-sdxl", prompt="x", image_url=allowed_server.url("/img.png"), steps=4,
        width=256, height=256,
    )  # fmt: skip
    assert decode_b64(result.data[0].b64_json).size == (256, 256)  # type: ignore[union-attr]
    assert "/img.png" in allowed_server.hits


@pytest.mark.parametrize(
    "url,code",
    [
        ("http://127.0.0.1:{internal}/img.png", "blocked_address"),
        ("http://169.254.169.254/latest/meta-data/", "blocked_address"),
        ("file:///etc/passwd", "unsupported_url_scheme"),
        ("{allowed}/redirect?to=http://127.0.0.1:{internal}/img.png", "blocked_address"),
    ],
)
def test_ssrf_table(
    http: httpx.Client,
    allowed_server: ImageServer,
    internal_server: ImageServer,
    url: str,
    code: str,
) -> None:
    target = url.format(
        internal=internal_server.port, allowed=f"http://{IMAGE_SERVER_HOST}:{allowed_server.port}"
    )
    body = {"model": "tiny-sdxl", "prompt": "x", "width": 256, "height": 256, "image_url": target}
    response = http.post("/v1/images/generations", json=body)
    assert response.status_code == 400, response.text
    error = response.json()["error"]
    assert (error["param"], error["code"]) == ("image_url", code)
    assert internal_server.hits == []  # nothing was fetched


def test_a1111_img2img_replayed_payload(http: httpx.Client) -> None:
    payload = {
        "init_images": [base64.b64encode(png(96, 64)).decode()],
        "prompt": "a boat",
        "negative_prompt": "",
        "denoising_strength": 0.5,
        "width": 384,
        "height": 256,
        "steps": 6,
        "cfg_scale": 7,
        "seed": 21,
        "sampler_name": "Euler a",
        "batch_size": 2,
        "mask_blur": 4,
        "inpainting_fill": 1,
        "include_init_images": False,
        "override_settings": {},
    }
    response = http.post("/sdapi/v1/img2img", json=payload, headers=webui_auth())
    assert response.status_code == 200, response.text
    body = response.json()
    assert [decode_b64(image).size for image in body["images"]] == [(384, 256)] * 2
    info: dict[str, Any] = json.loads(body["info"])
    assert info["all_seeds"] == [21, 22] and info["denoising_strength"] == 0.5


def truncated_png() -> bytes:
    data = png(64, 64)
    return data[: len(data) // 2]


@pytest.mark.parametrize(
    "files,status,param,code",
    [
        ([("image", ("t.png", truncated_png(), "image/png"))], 400, "image", "invalid_image"),
        (
            [("image", ("a.png", png(64, 64), "image/png")),
             ("mask", ("m.png", alpha_mask(32, 32)[0], "image/png"))],
            400, "mask", "mask_size_mismatch",
        ),
        ([("image[]", (f"{i}.png", png(8, 8), "image/png")) for i in range(17)],
         400, "image", "too_many_images"),
        ([("image", ("big.png", b"\0" * (TEST_UPLOAD_LIMIT + 1), "image/png"))],
         413, None, "request_too_large"),
    ],
)  # fmt: skip
def test_bad_uploads(
    http: httpx.Client, files: list[Any], status: int, param: str | None, code: str
) -> None:
    response = http.post("/v1/images/edits", data={"prompt": "x"}, files=files)
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert (error["param"], error["code"]) == (param, code)
    assert error["type"] == "invalid_request_error"
