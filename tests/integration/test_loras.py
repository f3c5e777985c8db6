"""LoRA adapters end to end: the together SDK's image_loras, A1111 <lora:...> in txt2img
and img2img, the openai SDK's extra_body, mixed-adapter batches, the listing routes, and
every bad adapter being a 400 after which the next request still works."""

from __future__ import annotations

import base64
import io
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import openai
import pytest
import together
from PIL import Image

from common.paths import default_cache_root
from tests.integration.conftest import IMAGE_SERVER_HOST, model_stats
from tests.support.http import webui_auth
from tests.support.image_server import image_server
from tests.support.images import decode_b64, pixels

pytestmark = pytest.mark.integration

SIZE = 256  # generated at 32x32 (generation_scale 0.125), encoded as PNG
LORA_DIR = default_cache_root() / "loras"


@pytest.fixture(scope="module")
def together_client(base_url: str) -> together.Together:
    return together.Together(base_url=base_url, api_key="unused", max_retries=0, timeout=120)


def together_png(client: together.Together, seed: int, loras: list[dict[str, Any]] | None = None):
    kwargs: dict[str, Any] = {"image_loras": loras} if loras is not None else {}
    result = client.images.generate(
        model="tiny-sdxl",
        prompt="a lighthouse",
        steps=4,
        seed=seed,
        width=SIZE,
        height=SIZE,
        output_format="png",
        **kwargs,
    )
    return pixels(decode_b64(result.data[0].b64_json))  # type: ignore[union-attr]


def test_together_sdk_image_loras(together_client: together.Together) -> None:
    plain = together_png(together_client, 5)
    adapted = together_png(together_client, 5, [{"path": "demo-1", "scale": 1.0}])
    assert np.abs(adapted - plain).mean() > 3
    again = together_png(together_client, 5, [{"path": "demo-1", "scale": 1.0}])
    assert np.abs(again - adapted).max() <= 2
    zero = together_png(together_client, 5, [{"path": "demo-1", "scale": 0.0}])
    assert np.abs(zero - plain).max() <= 2


def test_openai_sdk_extra_body(client: openai.OpenAI, together_client: together.Together) -> None:
    result = client.images.generate(
        model="tiny-sdxl",
        prompt="a lighthouse",
        size="1024x1024",
        extra_body={"seed": 3, "num_inference_steps": 4, "loras": [{"name": "demo-2"}]},
    )
    plain = client.images.generate(
        model="tiny-sdxl",
        prompt="a lighthouse",
        size="1024x1024",
        extra_body={"seed": 3, "num_inference_steps": 4},
    )
    a, b = (pixels(decode_b64(r.data[0].b64_json)) for r in (result, plain))  # type: ignore[index]
    assert np.abs(a - b).mean() > 3


def a1111(http: httpx.Client, path: str, **body: Any) -> list[np.ndarray]:
    payload = {"steps": 4, "seed": 9, "width": SIZE, "height": SIZE, "cfg_scale": 5, **body}
    response = http.post(f"/sdapi/v1/{path}", json=payload, headers=webui_auth())
    assert response.status_code == 200, response.text
    return [pixels(decode_b64(image)) for image in response.json()["images"]]


def test_a1111_txt2img_tags(http: httpx.Client) -> None:
    (plain,) = a1111(http, "txt2img", prompt="a cat")
    (tagged,) = a1111(http, "txt2img", prompt="a cat <lora:demo-3:0.9>")
    (moved,) = a1111(http, "txt2img", prompt="<lora:demo-3:0.9> a cat")
    assert np.abs(tagged - plain).mean() > 3
    assert np.abs(tagged - moved).max() <= 2  # the tag is stripped from the encoded text


def test_a1111_img2img_tags(http: httpx.Client) -> None:
    buffer = io.BytesIO()
    Image.new("RGB", (SIZE, SIZE), (200, 80, 40)).save(buffer, "PNG")
    init = base64.b64encode(buffer.getvalue()).decode()
    common = {"init_images": [init], "denoising_strength": 0.75}
    (plain,) = a1111(http, "img2img", prompt="a boat", **common)
    (tagged,) = a1111(http, "img2img", prompt="a boat", negative_prompt="<lora:demo-4:1>", **common)
    assert np.abs(tagged - plain).mean() > 1


def test_mixed_adapters_share_batches_and_match_alone(together_client: together.Together) -> None:
    cases: list[tuple[int, list[dict[str, Any]] | None]] = [
        (21, [{"path": "demo-1", "scale": 1.0}]),
        (22, None),
        (23, [{"path": "demo-2", "scale": 0.8}, {"path": "demo-3", "scale": 0.5}]),
        (24, [{"path": "demo-4", "scale": -1.0}]),
    ] * 2
    alone = [together_png(together_client, seed, loras) for seed, loras in cases[:4]]
    before = model_stats()["batch_size_histogram"]
    with ThreadPoolExecutor(len(cases)) as pool:
        together_ = [pool.submit(together_png, together_client, s, lo) for s, lo in cases]
        results = [future.result() for future in together_]
    after = model_stats()["batch_size_histogram"]
    for index, image in enumerate(results):
        assert np.abs(image - alone[index % 4]).max() <= 2, index
    grown = {int(k): after.get(k, 0) - before.get(k, 0) for k in after}
    assert any(size > 1 and count > 0 for size, count in grown.items()), grown


def test_listing_routes(http: httpx.Client) -> None:
    data = http.get("/v1/loras").json()["data"]
    demo = {item["name"]: item for item in data if item["target_model"] == "tiny-sdxl"}
    assert {"demo-1", "demo-2", "demo-3", "demo-4"} <= set(demo)
    assert demo["demo-1"]["rank"] == 4 and demo["demo-1"]["source"] == "dir"
    assert demo["demo-1"]["size_bytes"] > 0
    assert http.get("/v1/loras", params={"model": "nope"}).status_code == 404
    items = http.get("/sdapi/v1/loras", headers=webui_auth()).json()
    assert {"name", "alias", "path", "metadata"} <= set(items[0])
    assert "demo-1" in {item["name"] for item in items}
    refreshed = http.post("/sdapi/v1/refresh-loras", headers=webui_auth())
    assert refreshed.status_code == 200 and refreshed.json() is None
    assert http.get("/v1/models/tiny-sdxl").json()["supports_loras"] is True
    # This test's own use of demo-1 (so it passes alone too): the replica reports it loaded.
    body = {"prompt": "x", "size": "256x256", "loras": [{"name": "demo-1"}]}
    assert http.post("/v1/images/generations", json=body).status_code == 200
    stats = model_stats()["loras_loaded"]
    assert stats["demo-1"]["load_ms"] > 0


def _write(name: str, data: bytes) -> Path:
    path = LORA_DIR / f"{name}.safetensors"
    path.write_bytes(data)
    return path


def _sd15_like() -> bytes:
    from safetensors.numpy import save

    module = "unet.down_blocks.0.attentions.0.transformer_blocks.0.attn1.to_q"
    return save(
        {
            f"{module}.lora_A.weight": np.zeros((4, 320), np.float32),
            f"{module}.lora_B.weight": np.zeros((320, 4), np.float32),
        }
    )


BAD_CASES = [
    ("unknown", None, [{"path": "no-such-lora", "scale": 1}], "image_loras[0].path"),
    ("corrupt", b"\x07garbage" * 40, [{"path": "bad-corrupt", "scale": 1}], "image_loras[0].path"),
    ("truncated", "truncated", [{"path": "bad-truncated", "scale": 1}], "image_loras[0].path"),
    ("sd15", "sd15", [{"path": "bad-sd15", "scale": 1}], "image_loras[0].path"),
    ("too-many", None, [{"path": "demo-1", "scale": 1}] * 5, "image_loras"),
    ("scale", None, [{"path": "demo-1", "scale": 50}], "image_loras[0].scale"),
    ("url", None, [{"path": "http://169.254.169.254/x.safetensors", "scale": 1}], None),
    ("ftp", None, [{"path": "ftp://example.com/x.safetensors", "scale": 1}], None),
    ("hub", None, [{"path": "someone/repo/x.safetensors", "scale": 1}], "image_loras[0].path"),
    ("too-big", "sparse", [{"path": "bad-too-big", "scale": 1}], "image_loras[0].path"),
]


@pytest.mark.parametrize("case,content,loras,param", BAD_CASES, ids=[c[0] for c in BAD_CASES])
def test_bad_adapters_are_400s_and_the_next_request_works(
    http: httpx.Client, case: str, content: Any, loras: list[dict[str, Any]], param: str | None
) -> None:
    written = None
    if content == "truncated":
        data = (LORA_DIR / "demo-1.safetensors").read_bytes()
        written = _write(f"bad-{case}", data[: len(data) // 2])
    elif content == "sd15":
        written = _write(f"bad-{case}", _sd15_like())
    elif content == "sparse":
        written = LORA_DIR / f"bad-{case}.safetensors"
        with written.open("wb") as handle:
            handle.truncate((1 << 30) + 1)  # over the default 1 GiB cap, no disk used
    elif content is not None:
        written = _write(f"bad-{case}", content)
    body = {"prompt": "x", "width": SIZE, "height": SIZE, "steps": 2, "image_loras": loras}
    try:
        response = http.post("/v1/images/generations", json=body)
        assert response.status_code == 400, response.text
        error = response.json()["error"]
        assert error["type"] == "invalid_request_error" and "Traceback" not in response.text
        if param is not None:
            assert error["param"] == param, error
        else:
            assert error["param"].startswith("image_loras[0]")
    finally:
        if written is not None:
            written.unlink()
    ok = http.post(
        "/v1/images/generations",
        json={**body, "image_loras": [{"path": "demo-1", "scale": 1.0}]},
    )
    assert ok.status_code == 200, ok.text


def test_adapter_by_url_equals_the_same_file_by_name(together_client: together.Together) -> None:
    with image_server(IMAGE_SERVER_HOST) as server:
        server.files["/style.safetensors"] = (LORA_DIR / "demo-2.safetensors").read_bytes()
        url = server.url("/style.safetensors")
        by_url = together_png(together_client, 31, [{"path": url, "scale": 0.9}])
        again = together_png(together_client, 31, [{"path": url, "scale": 0.9}])
        hits = [hit for hit in server.hits if hit == "/style.safetensors"]
    by_name = together_png(together_client, 31, [{"path": "demo-2", "scale": 0.9}])
    assert np.abs(by_url - by_name).max() <= 2
    assert np.abs(again - by_name).max() <= 2
    assert len(hits) == 1  # fetched once, then served from the cache


def test_a1111_bad_file_names_the_prompt(http: httpx.Client) -> None:
    path = _write("bad-a1111", b"\x07garbage" * 40)
    try:
        payload = {"prompt": "x <lora:bad-a1111:1>", "steps": 2, "width": SIZE, "height": SIZE}
        response = http.post("/sdapi/v1/txt2img", json=payload, headers=webui_auth())
    finally:
        path.unlink()
    assert response.status_code == 400, response.text
    body = response.json()
    assert body["error"] == "HTTPException" and "bad-a1111" in body["detail"]
    (ok,) = a1111(http, "txt2img", prompt="x <lora:demo-1:1>")
    assert ok.shape == (SIZE, SIZE, 3)
