"""Real clients, round 2 (issue 24), through Ray Serve on the shared ``imagegen`` app:
webuiapi (an A1111 client library from PyPI) on every discovery route, generation,
model switching, progress, interrupt and png-info; the openai SDK for free sizes,
the new aliases, the url default and stream usage; raw JSON for nulls and JSON edits.
"""

from __future__ import annotations

import base64
import io
import threading
from typing import Any

import httpx
import numpy as np
import openai
import pytest
import webuiapi
from PIL import Image

from tests.integration.conftest import (
    A1111_PASSWORD,
    A1111_USER,
    APP_NAME,
    model_stats,
    wait_until,
)
from tests.support.http import assert_error, webui_auth
from tests.support.images import decode_b64

FAST = {"num_inference_steps": 4}


@pytest.fixture(scope="module")
def webui(base_url: str) -> webuiapi.WebUIApi:
    host, port = base_url.removeprefix("http://").split(":")
    return webuiapi.WebUIApi(
        host=host, port=int(port), username=A1111_USER, password=A1111_PASSWORD, steps=4
    )


# --- A1111 through webuiapi -----------------------------------------------------------


def test_webuiapi_txt2img_with_its_defaults(webui: webuiapi.WebUIApi) -> None:
    """webuiapi posts A1111's whole model: eta, s_noise, hr_upscaler, script_name: null."""
    result = webui.txt2img(prompt="a lighthouse", seed=11, width=256, height=192)
    [image] = result.images
    assert image.size == (256, 192)
    assert result.info["all_seeds"] == [11]
    params = image.info["parameters"]
    assert params.startswith("a lighthouse\n") and "Seed: 11" in params
    assert "Sampler: Euler a" in params and "Model: tiny-sdxl" in params


def test_webuiapi_img2img(webui: webuiapi.WebUIApi) -> None:
    init = Image.new("RGB", (128, 128), (200, 40, 40))
    result = webui.img2img(images=[init], prompt="a red cube", width=128, height=128, seed=3)
    assert [image.size for image in result.images] == [(128, 128)]
    assert "Denoising strength" in result.images[0].info["parameters"]


def test_hires_fix_output_size(webui: webuiapi.WebUIApi) -> None:
    """webuiapi's defaults: hr_upscaler Latent, denoising_strength 0.7."""
    result = webui.txt2img(prompt="a castle", width=128, height=96, enable_hr=True,
                           hr_scale=2, hr_second_pass_steps=3, seed=4)  # fmt: skip
    [image] = result.images
    assert image.size == (256, 192)
    assert "Hires upscale: 2" in image.info["parameters"]
    resized = webui.txt2img(prompt="a castle", width=128, height=96, enable_hr=True,
                            hr_resize_x=320, hr_upscaler="Lanczos", steps=3)  # fmt: skip
    assert resized.image.size == (320, 240)


def test_latent_hires_modes_upscale_latents_not_pixels(http: httpx.Client) -> None:
    """Raw A1111 JSON: each Latent mode gives the hires size and a valid PNG, and an image
    other than the pixel upscale's from the same first pass (same seed)."""
    body = {"prompt": "a castle", "width": 128, "height": 96, "steps": 3, "seed": 7,
            "enable_hr": True, "hr_scale": 2, "hr_second_pass_steps": 3}  # fmt: skip
    images = {}
    for upscaler in ("Latent", "Latent (bicubic antialiased)", "Latent (nearest-exact)",
                     "Lanczos"):  # fmt: skip
        response = http.post("/sdapi/v1/txt2img", json={**body, "hr_upscaler": upscaler},
                             headers=webui_auth())  # fmt: skip
        assert response.status_code == 200, response.text
        image = decode_b64(response.json()["images"][0])
        assert (image.format, image.size) == ("PNG", (256, 192))
        assert f"Hires upscaler: {upscaler}" in image.info["parameters"]
        images[upscaler] = np.asarray(image.convert("RGB"), dtype=np.int16)
    pixel = images.pop("Lanczos")
    for upscaler, latent in images.items():
        assert np.abs(latent - pixel).mean() > 1, upscaler


def test_png_info_round_trip(webui: webuiapi.WebUIApi) -> None:
    image = webui.txt2img(prompt="a fox", negative_prompt="fog", seed=5, width=64, height=64).image
    info = webui.png_info(image)
    assert info.info == image.info["parameters"]
    parsed = info.json["parameters"]
    assert (parsed["Prompt"], parsed["Negative prompt"], parsed["Seed"]) == ("a fox", "fog", "5")
    assert (parsed["Size-1"], parsed["Size-2"], parsed["Steps"]) == ("64", "64", "4")


def test_every_discovery_call(webui: webuiapi.WebUIApi) -> None:
    assert [u["name"] for u in webui.get_upscalers()] == ["None", "Lanczos", "Nearest"]
    for empty in (webui.get_sd_vae, webui.get_hypernetworks, webui.get_face_restorers,
                  webui.get_realesrgan_models, webui.get_prompt_styles):  # fmt: skip
        assert empty() == []
    assert {"name": "Latent"} in webui.get_latent_upscale_modes()
    assert webui.get_scripts() == {"txt2img": [], "img2img": []}
    assert webui.get_embeddings() == {"loaded": {}, "skipped": {}}
    assert webui.get_cmd_flags()["api"] is True
    assert webui.get_memory()["ram"]["total"] > 0
    assert "Euler a" in webui.util_get_sampler_names()
    assert "karras" in webui.util_get_scheduler_names()
    assert webui.get_loras() is not None
    webui.refresh_checkpoints()
    for path in ("sd-modules", "script-info"):
        assert webui.session.get(f"{webui.baseurl}/{path}").json() == []
    refresh_vae = webui.session.post(f"{webui.baseurl}/refresh-vae")
    assert (refresh_vae.status_code, refresh_vae.json()) == (200, None)


def test_switching_the_model_through_options(webui: webuiapi.WebUIApi) -> None:
    before = webui.util_get_current_model()
    assert before.startswith("tiny-sdxl [")
    [fast] = [t for t in webui.util_get_model_names() if t.startswith("tiny-sdxl-4step [")]
    webui.util_set_model(fast, find_closest=False)  # titles as the client lists them
    try:
        assert webui.util_get_current_model().startswith("tiny-sdxl-4step [")
        result = webui.txt2img(prompt="a fox", steps=2, width=64, height=64)
        assert result.info["sd_model_name"] == "tiny-sdxl-4step"
    finally:
        webui.util_set_model(before, find_closest=False)
    assert webui.util_get_current_model() == before


def test_progress_then_interrupt_ends_a_50_step_job_early_with_a_200(
    webui: webuiapi.WebUIApi, base_url: str
) -> None:
    import ray

    webui.util_wait_for_ready(check_interval=0.2)  # job_count 0: what clients check first
    calls_before = model_stats()["unet_calls"]
    results: dict[str, Any] = {}

    def run() -> None:
        worker = webuiapi.WebUIApi(baseurl=webui.baseurl, username=A1111_USER,
                                   password=A1111_PASSWORD)  # fmt: skip
        results["result"] = worker.txt2img(prompt="a harbour", steps=50, width=1024, height=1024)

    thread = threading.Thread(target=run)
    thread.start()
    started = wait_until(
        lambda: (p := webui.get_progress())["state"]["sampling_step"] >= 2 and p, 60, "sampling"
    )
    assert started["state"]["job_count"] == 1 and started["state"]["sampling_steps"] == 50
    assert 0 < started["progress"] < 1
    # current_image: the image as it stands (a latent-size preview), unless skipped.
    shown = wait_until(lambda: webui.get_progress().get("current_image"), 60, "a preview")
    assert Image.open(io.BytesIO(base64.b64decode(shown))).format == "PNG"
    skipped = webui.session.get(f"{webui.baseurl}/progress", params={"skip_current_image": "true"})
    assert skipped.json()["current_image"] is None
    # Progress is per caller: without this caller's credentials there is nothing to see.
    assert httpx.get(f"{base_url}/sdapi/v1/progress").status_code == 401
    # The board is one named actor: every ingress replica of the app reaches it.
    named = {a["name"] for a in ray.util.list_named_actors(all_namespaces=True)}
    assert f"imagegen-a1111-jobs-{APP_NAME}" in named
    webui.interrupt()
    thread.join(60)
    assert not thread.is_alive()
    [image] = results["result"].images
    assert image.size == (1024, 1024)
    # It ended early: far fewer than its 50 denoising steps ran (one UNet call each).
    assert model_stats()["unet_calls"] - calls_before < 45
    assert webui.get_progress()["state"]["job_count"] == 0


def test_skip_answers_and_refused_fields_name_themselves(webui: webuiapi.WebUIApi) -> None:
    assert webui.skip() is None  # 200, null
    for field, value in (("restore_faces", True), ("script_name", "x/y/z plot"),
                         ("hr_upscaler", "4x-UltraSharp")):  # fmt: skip
        with pytest.raises(RuntimeError) as info:
            webui.txt2img(prompt="x", enable_hr=field == "hr_upscaler", **{field: value})
        assert info.value.args[0] == 400 and field in info.value.args[1]


def test_raw_a1111_body_with_nulls_and_disabled_blocks(http: httpx.Client) -> None:
    body = {
        "prompt": "a fox",
        "steps": 3,
        "width": 64,
        "height": 64,
        "script_name": None,
        "hr_checkpoint_name": None,
        "scheduler": "automatic",
        "sampler_index": "Euler",
        "cfg_scale": None,
        "alwayson_scripts": {"ControlNet": {"args": []}, "ADetailer": {"args": [False]}},
    }
    response = http.post("/sdapi/v1/txt2img", json=body, headers=webui_auth())
    assert response.status_code == 200, response.text
    enabled = {"ControlNet": {"args": [{"enabled": True, "image": "AA==", "model": "x"}]}}
    refused = http.post("/sdapi/v1/txt2img", json={**body, "alwayson_scripts": enabled},
                        headers=webui_auth())  # fmt: skip
    assert refused.status_code == 400 and "ControlNet" in refused.json()["detail"]


# --- OpenAI through the openai SDK -----------------------------------------------------


@pytest.mark.parametrize("size", ["1536x864", "1008x1792", "512x1536"])
def test_free_sizes_come_back_exactly(client: openai.OpenAI, size: str) -> None:
    result = client.images.generate(prompt="a fox", model="gpt-image-2", size=size,  # type: ignore[arg-type]
                                    extra_body=FAST)  # fmt: skip
    width, height = (int(side) for side in size.split("x"))
    assert decode_b64(result.data[0].b64_json).size == (width, height)
    assert result.size == size


def test_a_size_outside_the_rules_states_the_rule(http: httpx.Client) -> None:
    response = http.post("/v1/images/generations", json={"prompt": "x", "size": "1000x1000"})
    assert_error(response, 400, "size", "invalid_request_error")
    assert "multiple of 16" in response.json()["error"]["message"]


@pytest.mark.parametrize("name", ["gpt-image-2", "chatgpt-image-latest"])
def test_new_aliases(client: openai.OpenAI, name: str) -> None:
    raw = client.images.with_raw_response.generate(prompt="a fox", model=name, extra_body=FAST)
    assert raw.headers["x-imagegen-model"] == "tiny-sdxl"
    assert raw.parse().data[0].b64_json


@pytest.mark.parametrize("name", ["dall-e-2", "dall-e-3"])
def test_dall_e_defaults_to_a_url_served_by_the_local_store(
    client: openai.OpenAI, name: str
) -> None:
    result = client.images.generate(prompt="a fox", model=name, size="256x256", extra_body=FAST)
    assert result.data[0].b64_json is None and result.data[0].url
    download = httpx.get(result.data[0].url, timeout=30)
    assert download.status_code == 200
    assert Image.open(io.BytesIO(download.content)).size == (256, 256)


def test_usage_on_plain_and_streamed_responses(client: openai.OpenAI) -> None:
    result = client.images.generate(prompt="a red fox", size="1024x1024", quality="low",
                                    extra_body=FAST)  # fmt: skip
    assert result.usage is not None
    assert (result.usage.input_tokens, result.usage.output_tokens) == (3, 272)
    assert result.usage.total_tokens == 275
    stream = client.images.generate(prompt="a red fox", size="1536x1024", stream=True,
                                    extra_body=FAST)  # fmt: skip
    [done] = [event for event in stream if event.type == "image_generation.completed"]
    assert done.usage.output_tokens == 1568 and done.usage.input_tokens == 3
    assert (done.size, done.quality, done.background, done.output_format) == (
        "1536x1024",
        "auto",
        "opaque",
        "png",
    )


# --- raw JSON --------------------------------------------------------------------------


def test_nulls_are_defaults_in_every_json_dialect(http: httpx.Client) -> None:
    nulls = {"n": None, "size": None, "quality": None, "response_format": None, "seed": None}
    openai_body = {"prompt": "a fox", "num_inference_steps": 3, **nulls}
    response = http.post("/v1/images/generations", json=openai_body)
    assert response.status_code == 200, response.text
    assert decode_b64(response.json()["data"][0]["b64_json"]).size == (1024, 1024)
    together = {"prompt": "a fox", "steps": 3, "width": None, "n": None, "image_url": None}
    response = http.post("/v1/images/generations", json=together)
    assert response.status_code == 200 and response.headers["x-imagegen-dialect"] == "together"


def _png_data_url(size: tuple[int, int], mode: str = "RGB") -> str:
    buffer = io.BytesIO()
    Image.new(mode, size, (10, 200, 30, 0) if mode == "RGBA" else (10, 200, 30)).save(
        buffer, format="PNG"
    )
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode()


def test_json_body_edits(http: httpx.Client) -> None:
    body = {
        "prompt": "make it blue",
        "images": [{"image_url": _png_data_url((96, 64))}],
        "mask": {"image_url": _png_data_url((96, 64), "RGBA")},
        "size": "auto",
        "num_inference_steps": 4,
        "n": None,
    }
    response = http.post("/v1/images/edits", json=body)
    assert response.status_code == 200, response.text
    data = response.json()
    assert decode_b64(data["data"][0]["b64_json"]).size == (1536, 1024)
    assert data["usage"]["input_tokens"] == 3
    refused = http.post("/v1/images/edits", json={**body, "images": [{"file_id": "file-1"}]})
    assert_error(refused, 400, "images[0].file_id", "invalid_request_error")
    private = http.post(
        "/v1/images/edits", json={**body, "images": [{"image_url": "http://10.0.0.1/a.png"}]}
    )
    assert_error(private, 400, "images[0].image_url", "invalid_request_error")


def test_openai_pngs_carry_the_parameters_text(client: openai.OpenAI) -> None:
    result = client.images.generate(prompt="a fox", size="256x256", extra_body={**FAST, "seed": 8})
    text = decode_b64(result.data[0].b64_json).info["parameters"]
    assert text.startswith("a fox\n") and "Seed: 8" in text and "Steps: 4" in text


def test_every_listed_sampler_and_schedule_on_every_model(
    webui: webuiapi.WebUIApi, http: httpx.Client
) -> None:
    """Each pair /samplers and /schedulers list runs on tiny-sdxl (a pair diffusers lacks
    is a 400 naming scheduler); every sampler runs on the 4-step model too."""
    samplers = webui.util_get_sampler_names()
    schedules = webui.util_get_scheduler_names()
    ran = 0
    for model, pairs in (
        ("tiny-sdxl", [(s, k) for s in samplers for k in schedules]),
        ("tiny-sdxl-4step", [(s, "automatic") for s in samplers]),
    ):
        for sampler, schedule in pairs:
            body = {"prompt": "a fox", "steps": 2, "width": 64, "height": 64, "seed": 1,
                    "sampler_name": sampler, "scheduler": schedule,
                    "override_settings": {"sd_model_checkpoint": model}}  # fmt: skip
            response = http.post("/sdapi/v1/txt2img", json=body, headers=webui_auth())
            if response.status_code == 400:
                assert "scheduler" in response.json()["detail"], (sampler, schedule)
                continue
            assert response.status_code == 200, (model, sampler, schedule, response.text)
            ran += 1
    assert ran > len(samplers) * 3
