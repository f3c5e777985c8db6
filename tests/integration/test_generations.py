"""POST /v1/images/generations through real Ray Serve, driven by the official openai SDK."""

from __future__ import annotations

import io
from concurrent.futures import ThreadPoolExecutor

import httpx
import openai
import pytest
from PIL import Image

from common.sizes import OPENAI_SIZES, parse_size
from tests.integration.conftest import model_stats
from tests.support.images import assert_close, decode_b64, pixels


def test_three_1024_pngs(client: openai.OpenAI) -> None:
    result = client.images.generate(prompt="a lighthouse", n=3, size="1024x1024")
    assert len(result.data) == 3
    images = [decode_b64(item.b64_json) for item in result.data]
    for image in images:
        assert (image.format, image.size) == ("PNG", (1024, 1024))
    assert result.size == "1024x1024" and result.output_format == "png"
    assert len({image.tobytes() for image in images}) == 3  # each image has its own seed


@pytest.mark.parametrize("size", OPENAI_SIZES)
def test_every_dalle_size_comes_back_exactly(client: openai.OpenAI, size: str) -> None:
    result = client.images.generate(prompt="a fox", size=size)  # type: ignore[arg-type]
    assert decode_b64(result.data[0].b64_json).size == parse_size(size)


@pytest.mark.parametrize("fmt,pil_format", [("jpeg", "JPEG"), ("webp", "WEBP"), ("png", "PNG")])
def test_output_formats(client: openai.OpenAI, fmt: str, pil_format: str) -> None:
    result = client.images.generate(
        prompt="a fox",
        size="1536x1024",
        output_format=fmt,
        output_compression=70,  # type: ignore[arg-type]
    )
    image = decode_b64(result.data[0].b64_json)
    assert (image.format, image.size) == (pil_format, (1536, 1024))
    assert result.output_format == fmt


def test_url_output_is_served_back_over_http(client: openai.OpenAI, http: httpx.Client) -> None:
    result = client.images.generate(
        prompt="a fox", n=2, size="1024x1792", response_format="url", output_format="webp"
    )
    for item in result.data:
        assert item.url and item.b64_json is None
        response = httpx.get(item.url, timeout=30)
        assert response.status_code == 200
        assert response.headers["content-type"] == "image/webp"
        assert response.headers["x-content-type-options"] == "nosniff"
        image = Image.open(io.BytesIO(response.content))
        assert (image.format, image.size) == ("WEBP", (1024, 1792))


def test_url_signature_is_enforced(client: openai.OpenAI) -> None:
    url = client.images.generate(prompt="a fox", response_format="url").data[0].url
    assert url is not None
    forged = url[:-4] + ("0000" if not url.endswith("0000") else "1111")
    response = httpx.get(forged, timeout=30)
    assert response.status_code == 403
    assert response.json()["error"]["code"] == "invalid_url"
    unsigned = httpx.get(url.split("?")[0], timeout=30)
    assert unsigned.status_code == 403


def test_same_seed_same_image(client: openai.OpenAI) -> None:
    first = client.images.generate(prompt="a red boat", extra_body={"seed": 1234})
    second = client.images.generate(prompt="a red boat", extra_body={"seed": 1234})
    assert first.data[0].model_extra["seed"] == 1234
    assert_close(decode_b64(first.data[0].b64_json), decode_b64(second.data[0].b64_json))


def test_seed_counts_up_and_matches_alone_in_batch(client: openai.OpenAI) -> None:
    batch = client.images.generate(prompt="a red boat", n=3, extra_body={"seed": 500})
    assert [item.model_extra["seed"] for item in batch.data] == [500, 501, 502]
    alone = client.images.generate(prompt="a red boat", extra_body={"seed": 501})
    assert_close(decode_b64(batch.data[1].b64_json), decode_b64(alone.data[0].b64_json))


def test_random_seeds_are_reported_and_replayable(client: openai.OpenAI) -> None:
    raw = client.images.with_raw_response.generate(prompt="a bird", n=2)
    result = raw.parse()
    seeds = [item.model_extra["seed"] for item in result.data]
    assert raw.headers["x-imagegen-seeds"] == ",".join(map(str, seeds))
    replay = client.images.generate(prompt="a bird", extra_body={"seed": seeds[1]})
    assert_close(decode_b64(result.data[1].b64_json), decode_b64(replay.data[0].b64_json))


def test_extensions_change_the_image(client: openai.OpenAI) -> None:
    plain = client.images.generate(prompt="a tree", extra_body={"seed": 9})
    for extra in (
        {"negative_prompt": "leaves"},
        {"num_inference_steps": 5},
        {"guidance_scale": 1.0},
    ):
        other = client.images.generate(prompt="a tree", extra_body={"seed": 9, **extra})
        changed = pixels(decode_b64(other.data[0].b64_json)) != pixels(
            decode_b64(plain.data[0].b64_json)
        )
        assert changed.any(), extra


def test_eight_concurrent_requests_batch_and_stay_correct(client: openai.OpenAI) -> None:
    # Batches run one at a time, so once this request is back, whatever a previous
    # test left running (a cancelled 200-step stream) has finished: the counters below
    # count only these eight requests, whatever ran before.
    client.images.generate(prompt="settle", size="256x256")
    before = model_stats()
    seeds = list(range(7000, 7008))

    def one(seed: int):
        return client.images.generate(prompt="a city", size="512x512", extra_body={"seed": seed})

    with ThreadPoolExecutor(max_workers=8) as pool:
        results = list(pool.map(one, seeds))
    after = model_stats()

    # Every request got exactly its own image back.
    reference = client.images.generate(
        prompt="a city", n=8, size="512x512", extra_body={"seed": 7000}
    )
    for seed, result, expected in zip(seeds, results, reference.data, strict=True):
        assert [item.model_extra["seed"] for item in result.data] == [seed]
        assert_close(decode_b64(result.data[0].b64_json), decode_b64(expected.b64_json))

    # And some of them shared a pipeline call: in request mode a batch, in step mode
    # a UNet call (requests join the running batch between steps, one at a time or not).
    assert after["requests"] - before["requests"] == 8
    hist = "batch_size_histogram" if after["mode"] == "request" else "rows_per_call_histogram"
    hist_before = {int(k): v for k, v in before[hist].items()}
    hist_after = {int(k): v for k, v in after[hist].items()}
    grown = {size: hist_after[size] - hist_before.get(size, 0) for size in hist_after}
    assert any(size > 1 and count > 0 for size, count in grown.items()), grown
    if after["mode"] == "request":
        assert after["batches"] - before["batches"] < 8


def test_models_list_includes_aliases(client: openai.OpenAI) -> None:
    ids = {model.id for model in client.models.list()}
    assert {"tiny-sdxl", "dall-e-2", "dall-e-3", "gpt-image-1"} <= ids
    assert client.models.retrieve("dall-e-3").model_extra["root"] == "tiny-sdxl"


def test_alias_routes_to_the_model(client: openai.OpenAI) -> None:
    raw = client.images.with_raw_response.generate(
        prompt="a fox", model="dall-e-3", response_format="b64_json", extra_body={"seed": 3}
    )
    assert raw.headers["x-imagegen-model"] == "tiny-sdxl"
    direct = client.images.generate(prompt="a fox", model="tiny-sdxl", extra_body={"seed": 3})
    assert_close(decode_b64(raw.parse().data[0].b64_json), decode_b64(direct.data[0].b64_json))


def test_ignored_openai_fields_are_accepted(client: openai.OpenAI) -> None:
    result = client.images.generate(
        prompt="a fox", quality="hd", style="vivid", moderation="low", user="me"
    )
    assert decode_b64(result.data[0].b64_json).size == (1024, 1024)


def test_health_and_readiness(http: httpx.Client) -> None:
    assert http.get("/health").json() == {"status": "ok"}
    ready = http.get("/ready")
    assert ready.status_code == 200
    assert ready.json()["deployments"] == {
        "encoder": "ready",
        "model:tiny-sdxl": "ready",
        # Scale-to-zero models: never woken by a probe.
        "model:tiny-sdxl-4step": "on_demand",
        "model:tiny-flux": "on_demand",
        "model:tiny-qwen-image": "on_demand",
    }


def test_stats_route_reports_model_counters(http: httpx.Client) -> None:
    models = http.get("/v1/stats").json()["models"]
    stats = models["tiny-sdxl"]
    assert stats["requests"] > 0 and stats["images"] >= stats["requests"]
    assert sum(stats["batch_size_histogram"].values()) == stats["batches"]
    assert models["tiny-sdxl-4step"] == "on_demand"  # not woken to report counters
