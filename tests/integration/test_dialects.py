"""Every client against one running Ray Serve app: the together SDK, the imagine SDK, and
A1111 / Open WebUI payloads replayed over httpx exactly as those programs send them."""

from __future__ import annotations

import base64
import io
import json
from collections.abc import Iterator

import httpx
import pytest
import together
from imagine import ImagineClient
from imagine.exceptions import ImagineAPIException
from PIL import Image

from tests.support.http import webui_auth
from tests.support.images import assert_close, decode_b64, pixels


@pytest.fixture(scope="module")
def together_client(base_url: str) -> together.Together:
    # The together SDK appends /v1 itself.
    return together.Together(base_url=base_url, api_key="unused", max_retries=0, timeout=120)


@pytest.fixture(scope="module")
def imagine_client(base_url: str) -> Iterator[ImagineClient]:
    yield ImagineClient(endpoint=f"{base_url}/v1", api_key="unused", max_retries=1, timeout=120)


# --- Together ---------------------------------------------------------------------------


def test_together_sdk_b64(together_client: together.Together) -> None:
    result = together_client.images.generate(
        model="tiny-sdxl", prompt="a lighthouse", steps=4, seed=11, width=512, height=384, n=2
    )
    assert result.object == "list" and result.model == "tiny-sdxl" and result.id
    assert [item.index for item in result.data] == [0, 1]
    images = [decode_b64(item.b64_json) for item in result.data]  # type: ignore[union-attr]
    for image in images:
        assert (image.format, image.size) == ("JPEG", (512, 384))  # Together's default: jpeg
    again = together_client.images.generate(
        model="tiny-sdxl", prompt="a lighthouse", steps=4, seed=12, width=512, height=384
    )
    # seed 11 + 1 is the second image of the first request.
    assert_close_jpeg(images[1], decode_b64(again.data[0].b64_json))  # type: ignore[union-attr]


def assert_close_jpeg(a: Image.Image, b: Image.Image) -> None:
    """JPEG re-encodes the +-1/255 batch difference; compare on average."""
    assert a.size == b.size
    assert abs(pixels(a) - pixels(b)).mean() < 2.0


def test_together_sdk_url_and_png(together_client: together.Together) -> None:
    result = together_client.images.generate(
        model="dall-e-3",
        prompt="a fox",
        steps=3,
        seed=5,
        width=640,
        height=448,
        n=2,
        output_format="png",
        response_format="url",
    )
    for item in result.data:
        assert item.type == "url"
        response = httpx.get(item.url, timeout=30)  # type: ignore[union-attr]
        assert response.status_code == 200 and response.headers["content-type"] == "image/png"
        assert Image.open(io.BytesIO(response.content)).size == (640, 448)


def test_together_sdk_guidance_and_negative_prompt_change_the_image(
    together_client: together.Together,
) -> None:
    def one(**kw: object) -> Image.Image:
        result = together_client.images.generate(
            model="tiny-sdxl",
            prompt="a tree",
            steps=3,
            seed=9,
            width=256,
            height=256,
            output_format="png",
            **kw,  # type: ignore[arg-type]
        )
        return decode_b64(result.data[0].b64_json)  # type: ignore[union-attr]

    plain = pixels(one())
    assert (pixels(one(guidance_scale=1.0)) != plain).any()
    assert (pixels(one(negative_prompt="leaves")) != plain).any()


def test_together_sdk_errors(together_client: together.Together) -> None:
    with pytest.raises(together.BadRequestError) as info:
        together_client.images.generate(
            model="tiny-sdxl", prompt="x", image_url="http://169.254.169.254/latest/meta-data/"
        )
    assert "image_url" in str(info.value) and "private" in str(info.value)
    with pytest.raises(together.BadRequestError, match="image_loras"):
        together_client.images.generate(
            model="tiny-sdxl", prompt="x", image_loras=[{"path": "https://x/l", "scale": 1.0}]
        )
    with pytest.raises(together.NotFoundError):
        together_client.images.generate(model="black-forest-labs/FLUX.1-schnell", prompt="x")


# --- imagine ----------------------------------------------------------------------------


def test_imagine_sdk_seed_increment(imagine_client: ImagineClient, http: httpx.Client) -> None:
    result = imagine_client.images_generate(
        prompt="a boat", model="tiny-sdxl", n=2, seed=5, num_inference_steps=4, size="256x256"
    )
    assert result.object == "text_to_image" and result.model == "tiny-sdxl"
    images = [decode_b64(item.b64_json) for item in result.data]
    assert [image.size for image in images] == [(256, 256), (256, 256)]
    # Image 1 used seed 5 + 1 * 100 (the SDK's default seed_increment).
    alone = imagine_client.images_generate(
        prompt="a boat", model="tiny-sdxl", seed=105, num_inference_steps=4, size="256x256"
    )
    assert_close(images[1], decode_b64(alone.data[0].b64_json))


def test_imagine_sdk_url(imagine_client: ImagineClient) -> None:
    result = imagine_client.images_generate(
        prompt="a boat", model="tiny-sdxl", num_inference_steps=3, response_format="url"
    )
    url = result.data[0].url
    assert url is not None and url.startswith("http://127.0.0.1:")  # SDK joined our path
    response = httpx.get(url, timeout=30)
    assert response.status_code == 200
    assert Image.open(io.BytesIO(response.content)).size == (512, 512)


def test_imagine_cache_interval_reaches_the_pipeline(imagine_client: ImagineClient) -> None:
    def one(cache_interval: int | None) -> Image.Image:
        result = imagine_client.images_generate(
            prompt="a boat",
            model="tiny-sdxl",
            seed=3,
            num_inference_steps=8,
            size="256x256",
            cache_interval=cache_interval,
        )
        return decode_b64(result.data[0].b64_json)

    plain, interval_one, cached = one(None), one(1), one(3)
    assert_close(plain, interval_one)
    assert (pixels(cached) != pixels(plain)).any()  # the deep features really were reused


def test_imagine_errors(imagine_client: ImagineClient) -> None:
    with pytest.raises(ImagineAPIException) as info:
        imagine_client.images_generate(prompt="x", model="tiny-sdxl", size="huge")
    assert info.value.http_status == 400 and "size" in str(info.value)
    with pytest.raises(ImagineAPIException) as info:
        imagine_client.images_generate(prompt="x")  # the SDK's default model, sdxl-turbo
    assert info.value.http_status == 404


def test_imagine_sdk_streams_previews_then_the_images(imagine_client: ImagineClient) -> None:
    responses = list(
        imagine_client.images_generate_stream(
            prompt="a boat", model="tiny-sdxl", n=2, seed=7, num_inference_steps=6, size="256x256"
        )
    )
    # IMAGINE_STREAM_PARTIALS previews, then the finished images; every one an ImageResponse
    # (the SDK's model drops our partial_image_index: the last response is the final one).
    assert len(responses) == 3
    for response in responses:
        assert response.object == "text_to_image" and len(response.data) == 2
        assert all(decode_b64(d.b64_json).size == (256, 256) for d in response.data)
    plain = imagine_client.images_generate(
        prompt="a boat", model="tiny-sdxl", n=2, seed=7, num_inference_steps=6, size="256x256"
    )
    for streamed, direct in zip(responses[-1].data, plain.data, strict=True):
        assert_close(decode_b64(streamed.b64_json), decode_b64(direct.b64_json))


def test_imagine_sdk_stream_with_urls(imagine_client: ImagineClient) -> None:
    """The SDK rewrites every item's url, previews' too, so previews are stored as well."""
    responses = list(
        imagine_client.images_generate_stream(
            prompt="a boat", model="tiny-sdxl", num_inference_steps=4, response_format="url"
        )
    )
    assert len(responses) == 3
    for response in responses:
        url = response.data[0].url
        assert url is not None and url.startswith("http://127.0.0.1:")
        download = httpx.get(url, timeout=30)
        assert download.status_code == 200
        assert Image.open(io.BytesIO(download.content)).size == (512, 512)


def test_imagine_stream_errors_before_the_stream_are_http_errors(
    imagine_client: ImagineClient,
) -> None:
    with pytest.raises(ImagineAPIException) as info:
        list(imagine_client.images_generate_stream(prompt="x", model="tiny-sdxl", size="huge"))
    assert info.value.http_status == 400 and "size" in str(info.value)


# --- AUTOMATIC1111, as Open WebUI's automatic1111 engine calls it -----------------------


def test_a1111_open_webui_flow(http: httpx.Client) -> None:
    auth = webui_auth()
    # Settings page: verify the URL, list models, read and set the checkpoint.
    assert http.get("/sdapi/v1/options", headers=auth).status_code == 200
    models = http.get("/sdapi/v1/sd-models", headers=auth).json()
    names = ["tiny-sdxl", "tiny-sdxl-4step", "tiny-flux", "tiny-qwen-image"]
    assert [m["model_name"] for m in models] == names
    assert set(models[0]) == {"title", "model_name", "hash", "sha256", "filename", "config"}
    options = http.get("/sdapi/v1/options", headers=auth).json()
    options["sd_model_checkpoint"] = models[0]["title"]
    assert http.post("/sdapi/v1/options", json=options, headers=auth).status_code == 200
    # Generation: {prompt, batch_size, width, height, steps?, negative_prompt?}.
    data = {"prompt": "a castle", "batch_size": 2, "width": 512, "height": 512, "steps": 4}
    res = http.post("/sdapi/v1/txt2img", json=data, headers=auth).json()
    images = [Image.open(io.BytesIO(base64.b64decode(i))) for i in res["images"]]
    assert [(i.format, i.size) for i in images] == [("PNG", (512, 512))] * 2
    info = json.loads(res["info"])
    assert len(info["all_seeds"]) == 2 and info["all_seeds"][1] == info["seed"] + 1
    assert res["parameters"]["prompt"] == "a castle"
    # The reported seed replays the image.
    replay = {**data, "batch_size": 1, "seed": info["all_seeds"][1]}
    again = http.post("/sdapi/v1/txt2img", json=replay, headers=auth).json()
    assert_close(images[1], Image.open(io.BytesIO(base64.b64decode(again["images"][0]))))


def test_a1111_sampler_and_errors(http: httpx.Client) -> None:
    auth = webui_auth()
    body = {"prompt": "a castle", "steps": 3, "width": 256, "height": 256, "seed": 4}
    euler = http.post("/sdapi/v1/txt2img", json=body, headers=auth).json()
    karras = http.post(
        "/sdapi/v1/txt2img", json={**body, "sampler_name": "DPM++ 2M Karras"}, headers=auth
    ).json()
    assert euler["images"][0] != karras["images"][0]
    assert json.loads(karras["info"])["sampler_name"] == "DPM++ 2M Karras"
    bad = http.post("/sdapi/v1/txt2img", json={**body, "sampler_name": "DPM fast"}, headers=auth)
    assert bad.status_code == 400 and "Euler a" in bad.json()["detail"]
    unauthorized = http.post("/sdapi/v1/txt2img", json=body)
    assert unauthorized.status_code == 401 and unauthorized.json()["error"] == "HTTPException"


# --- Open WebUI's OpenAI engine ---------------------------------------------------------


@pytest.mark.parametrize("model", ["dall-e-2", "dall-e-3", "gpt-image-1"])
def test_open_webui_openai_engine(http: httpx.Client, model: str) -> None:
    headers = {"Authorization": "Bearer sk-openwebui", "Content-Type": "application/json"}
    data = {
        "model": model,
        "prompt": "a fox",
        "n": 1,
        "size": "512x512",
        "response_format": "b64_json",
    }
    res = http.post("/v1/images/generations", json=data, headers=headers)
    assert res.status_code == 200 and res.headers["x-imagegen-dialect"] == "openai"
    assert decode_b64(res.json()["data"][0]["b64_json"]).size == (512, 512)


def test_open_webui_downloads_url_with_its_bearer_header(http: httpx.Client) -> None:
    headers = {"Authorization": "Bearer sk-openwebui", "Content-Type": "application/json"}
    data = {
        "model": "dall-e-3",
        "prompt": "a fox",
        "n": 1,
        "size": "1024x1024",
        "response_format": "url",
    }
    url = http.post("/v1/images/generations", json=data, headers=headers).json()["data"][0]["url"]
    download = httpx.get(url, headers={"Authorization": "Bearer sk-openwebui"}, timeout=30)
    assert download.status_code == 200
    assert download.headers["content-type"].split("/")[0] == "image"
