"""Prometheus metrics per model, scraped from Ray's metrics endpoint."""

from __future__ import annotations

import re

import httpx
import openai

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
    """Our request's counts show up on Ray's endpoint, each by at least what it did.

    Other tests share the app, so counts are read as growth since a scrape taken just
    before the request. Only counts are compared: Ray exports a histogram's ``_sum``
    from its buckets (a batch of 2 images adds 1.5), so sums are only checked to grow.
    """
    before = scrape(metrics_port)
    client.images.generate(prompt="counted", n=2, output_format="webp", size="256x256")
    # (metric, tag) -> at least this much growth from the one request above.
    ours = {
        ("ray_imagegen_images_generated_total", MODEL): 2,
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
    for name, tag in [
        ("ray_imagegen_batch_images_sum", MODEL),
        ("ray_imagegen_generation_ms_sum", MODEL),
        ("ray_imagegen_encode_ms_sum", "webp"),
    ]:
        assert delta[(name, tag)] > 0, name
