"""The transformer families end to end: Ray Serve, the official SDKs, every dialect.

``tiny-flux`` (and ``tiny-qwen-image``) are served by the default config, each in its
own scale-to-zero deployment; the first request here wakes it. Every test runs for
every family. What is checked is what the family decides (sizes,
seeds, guidance through the embedding, per-row LoRA, streamed previews, edits, the
400s for what flow matching cannot do) through the same routes SDXL uses.
"""

from __future__ import annotations

import base64
import io
import json
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import httpx
import numpy as np
import openai
import pytest
import together
from imagine import ImagineClient
from PIL import Image

from tests.support.http import webui_auth
from tests.support.images import assert_close, decode_b64, pixels

# (model id, family, demo adapter prefix)
FAMILIES = [("tiny-flux", "flux", "flux-demo"), ("tiny-qwen-image", "qwen_image", "qwen-demo")]


@pytest.fixture(scope="module", params=FAMILIES, ids=[f[1] for f in FAMILIES])
def family(request: pytest.FixtureRequest) -> tuple[str, str, str]:
    return request.param


@pytest.fixture(scope="module")
def model(family: tuple[str, str, str]) -> str:
    return family[0]


@pytest.fixture(scope="module")
def demo(family: tuple[str, str, str]) -> str:
    return family[2]


@pytest.fixture(scope="module")
def client(base_url: str) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{base_url}/v1", api_key="unused", max_retries=0, timeout=300)


def generate(client: openai.OpenAI, model: str, **params: Any) -> Any:
    return client.images.generate(model=model, prompt="a lighthouse", **params)


def mean_diff(a: Image.Image, b: Image.Image) -> float:
    return float(np.abs(pixels(a).astype(float) - pixels(b).astype(float)).mean())


def test_model_card_names_the_family(
    http: httpx.Client, model: str, family: tuple[str, str, str]
) -> None:
    card = http.get(f"/v1/models/{model}").json()
    assert card["family"] == family[1] and card["capabilities"]["samplers"] == ["Euler"]
    assert http.get("/v1/models/tiny-sdxl").json()["family"] == "sdxl"


def test_openai_sizes_seeds_and_n(client: openai.OpenAI, model: str) -> None:
    result = generate(client, model, size="1792x1024", n=2, extra_body={"seed": 5})
    images = [decode_b64(item.b64_json) for item in result.data]
    assert [image.size for image in images] == [(1792, 1024)] * 2
    alone = generate(client, model, size="1792x1024", extra_body={"seed": 6})
    assert_close(images[1], decode_b64(alone.data[0].b64_json))  # seed + 1, alone


def test_together_free_size_guidance_and_lora(base_url: str, model: str, demo: str) -> None:
    client = together.Together(base_url=base_url, api_key="unused", max_retries=0, timeout=300)

    def image(**params: Any) -> Image.Image:
        response = client.images.generate(
            model=model, prompt="a lighthouse", width=320, height=192, steps=6, seed=21, **params
        )
        return decode_b64(response.data[0].b64_json)

    plain = image(guidance_scale=3.5)
    assert plain.size == (320, 192)
    assert mean_diff(plain, image(guidance_scale=8.0)) > 1.0  # the family's own guidance
    adapted = image(guidance_scale=3.5, image_loras=[{"path": f"{demo}-1", "scale": 1.0}])
    assert mean_diff(plain, adapted) > 1.0


def test_rows_joined_mid_flight_with_mixed_loras_equal_each_alone(
    base_url: str, model: str, demo: str
) -> None:
    """Requests with different adapters and step counts share denoiser calls; each one's
    image is what it gets alone (within the CPU's batch tolerance)."""
    client = together.Together(base_url=base_url, api_key="unused", max_retries=0, timeout=300)
    cases = [
        {"seed": 31, "steps": 12, "image_loras": [{"path": f"{demo}-1", "scale": 1.0}]},
        {"seed": 32, "steps": 6, "image_loras": [{"path": f"{demo}-2", "scale": 0.7}]},
        {"seed": 33, "steps": 9},
    ]

    def image(case: dict[str, Any]) -> Image.Image:
        response = client.images.generate(
            model=model, prompt="a lighthouse", width=256, height=256, **case
        )
        return decode_b64(response.data[0].b64_json)

    with ThreadPoolExecutor(len(cases)) as pool:
        together_ = list(pool.map(image, cases))
    for case, joined in zip(cases, together_, strict=True):
        assert mean_diff(joined, image(case)) <= 1.0, case


def test_demo_adapters_are_listed_per_family(http: httpx.Client, model: str, demo: str) -> None:
    listed = http.get("/v1/loras", params={"model": model}).json()["data"]
    names = {item["name"] for item in listed}
    assert {f"{demo}-{i}" for i in range(1, 5)} <= names
    assert "demo-1" not in names  # SDXL's adapters live in another folder


def test_imagine_sdk_reaches_the_family(base_url: str, model: str) -> None:
    client = ImagineClient(endpoint=f"{base_url}/v1", api_key="unused", max_retries=1, timeout=300)
    result = client.images_generate(
        prompt="a boat", model=model, n=2, seed=5, num_inference_steps=4, size="256x256"
    )
    assert [decode_b64(item.b64_json).size for item in result.data] == [(256, 256)] * 2


def test_streamed_previews_then_the_final(client: openai.OpenAI, model: str) -> None:
    events = list(
        client.images.generate(  # type: ignore[call-overload]
            model=model, prompt="a harbour", stream=True, partial_images=2, size="1024x1024"
        )
    )
    kinds = [event.type for event in events]
    assert kinds == ["image_generation.partial_image"] * 2 + ["image_generation.completed"]
    assert decode_b64(events[-1].b64_json).size == (1024, 1024)


def test_masked_edit_keeps_the_outside(client: openai.OpenAI, model: str) -> None:
    source = Image.new("RGB", (256, 256), (200, 30, 30))
    mask = Image.new("RGBA", (256, 256), (0, 0, 0, 255))
    mask.paste((0, 0, 0, 0), (128, 0, 256, 256))  # transparent right half: repaint it

    def png(image: Image.Image) -> bytes:
        out = io.BytesIO()
        image.save(out, format="PNG")
        return out.getvalue()

    result = client.images.edit(
        model=model,
        image=("in.png", png(source), "image/png"),
        mask=("mask.png", png(mask), "image/png"),
        prompt="a window",
        size="256x256",
    )
    edited = pixels(decode_b64(result.data[0].b64_json))
    assert np.abs(edited[:, :120].astype(int) - [200, 30, 30]).mean() < 2


def test_a1111_checkpoint_override_and_sampler_refusal(
    http: httpx.Client, model: str, family: tuple[str, str, str]
) -> None:
    auth = webui_auth()
    body = {
        "prompt": "a castle",
        "steps": 4,
        "width": 256,
        "height": 256,
        "seed": 3,
        "override_settings": {"sd_model_checkpoint": model},
    }
    res = http.post("/sdapi/v1/txt2img", json=body, headers=auth, timeout=300)
    assert res.status_code == 200, res.text
    image = Image.open(io.BytesIO(base64.b64decode(res.json()["images"][0])))
    assert image.size == (256, 256)
    assert json.loads(res.json()["info"])["seed"] == 3
    bad = http.post(
        "/sdapi/v1/txt2img", json={**body, "sampler_name": "DPM++ 2M"}, headers=auth, timeout=300
    )
    assert bad.status_code == 400 and "sampler_name" in bad.text and family[1] in bad.text


def test_openai_sampler_is_a_400(client: openai.OpenAI, model: str) -> None:
    with pytest.raises(openai.BadRequestError) as err:
        generate(client, model, size="256x256", extra_body={"sampler": "DPM++ 2M"})
    assert "flow-matching" in str(err.value)


def test_a1111_lists_only_the_family_samplers(http: httpx.Client, model: str) -> None:
    auth = webui_auth()
    options = http.get("/sdapi/v1/options", headers=auth).json()
    before = options["sd_model_checkpoint"]
    try:
        set_to = {**options, "sd_model_checkpoint": model}
        assert http.post("/sdapi/v1/options", json=set_to, headers=auth).status_code == 200
        samplers = [item["name"] for item in http.get("/sdapi/v1/samplers", headers=auth).json()]
        schedules = [item["name"] for item in http.get("/sdapi/v1/schedulers", headers=auth).json()]
        assert samplers == ["Euler"] and schedules == ["automatic"]
    finally:
        restore = {**options, "sd_model_checkpoint": before}
        assert http.post("/sdapi/v1/options", json=restore, headers=auth).status_code == 200
    assert len(http.get("/sdapi/v1/samplers", headers=auth).json()) > 1  # back on SDXL
