"""Prometheus metrics per model, scraped from Ray's metrics endpoint."""

from __future__ import annotations

import re
import time

import httpx
import openai
import pytest

from tests.integration.conftest import wait_until

METRIC_LINE = re.compile(r"^(?P<name>ray_imagegen_\w+)\{(?P<tags>[^}]*)\} (?P<value>[0-9.e+-]+)$")


def scrape(port: int) -> dict[tuple[str, str], float]:
    """``(metric name, model or format tag) -> value`` for our metrics; {} if not up yet."""
    from ray.util import get_node_ip_address

    for host in ("127.0.0.1", get_node_ip_address()):
        try:
            text = httpx.get(f"http://{host}:{port}/metrics", timeout=5).text
            break
        except httpx.HTTPError:
            continue
    else:
        return {}
    values: dict[tuple[str, str], float] = {}
    for line in text.splitlines():
        match = METRIC_LINE.match(line)
        if not match:
            continue
        tags = dict(re.findall(r'(\w+)="([^"]*)"', match["tags"]))
        key = (match["name"], tags.get("model") or tags.get("format", ""))
        values[key] = values.get(key, 0.0) + float(match["value"])
    return values


MODEL = "tiny-sdxl"


def test_model_and_encoder_metrics_are_exported(client: openai.OpenAI, metrics_port: int) -> None:
    """Our request's counts show up, and the counters agree with one another.

    Ray exports every few seconds and other tests share the app, so the counts are
    read as growth since a scrape before the request, and checked for at least ours.
    """
    before = scrape(metrics_port)
    started = time.monotonic()
    client.images.generate(prompt="counted", n=2, output_format="webp", size="256x256")
    wall_ms = (time.monotonic() - started) * 1000
    # (metric, tag) -> at least this much growth from the one request above.
    ours = {
        ("ray_imagegen_images_generated_total", MODEL): 2,
        ("ray_imagegen_batch_images_sum", MODEL): 2,
        ("ray_imagegen_batch_images_count", MODEL): 1,
        ("ray_imagegen_queue_wait_ms_count", MODEL): 1,
        ("ray_imagegen_generation_ms_count", MODEL): 1,
        ("ray_imagegen_encode_ms_count", "webp"): 1,
    }

    def grown() -> dict[tuple[str, str], float] | None:
        values = scrape(metrics_port)
        delta = {key: values.get(key, 0.0) - before.get(key, 0.0) for key in values}
        return delta if all(delta.get(key, 0) >= n for key, n in ours.items()) else None

    delta = wait_until(grown, 90, "imagegen metrics on Ray's /metrics endpoint")
    # Every image a batch admitted was either finished or cancelled out of it.
    cancelled = delta.get(("ray_imagegen_cancelled_images_total", MODEL), 0.0)
    assert delta[("ray_imagegen_images_generated_total", MODEL)] + cancelled == pytest.approx(
        delta[("ray_imagegen_batch_images_sum", MODEL)]
    )
    # Timings are real durations: a pipeline call took time, but not more than a minute.
    calls = delta[("ray_imagegen_generation_ms_count", MODEL)]
    mean_ms = delta[("ray_imagegen_generation_ms_sum", MODEL)] / calls
    assert 0 < mean_ms < 60_000, mean_ms
    encode_ms = delta[("ray_imagegen_encode_ms_sum", "webp")]
    assert 0 < encode_ms / delta[("ray_imagegen_encode_ms_count", "webp")] < wall_ms
