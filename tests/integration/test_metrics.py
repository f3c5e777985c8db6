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


def test_model_and_encoder_metrics_are_exported(client: openai.OpenAI, metrics_port: int) -> None:
    client.images.generate(prompt="counted", n=2, output_format="webp", size="256x256")

    def exported() -> dict[tuple[str, str], float] | None:
        values = scrape(metrics_port)
        wanted = [
            ("ray_imagegen_images_generated_total", "tiny-sdxl"),
            ("ray_imagegen_batch_images_count", "tiny-sdxl"),
            ("ray_imagegen_queue_wait_ms_count", "tiny-sdxl"),
            ("ray_imagegen_generation_ms_count", "tiny-sdxl"),
            ("ray_imagegen_encode_ms_count", "webp"),
        ]
        return values if all(values.get(key, 0) > 0 for key in wanted) else None

    values = wait_until(exported, 90, "imagegen metrics on Ray's /metrics endpoint")
    assert values[("ray_imagegen_images_generated_total", "tiny-sdxl")] >= 2
    assert values[("ray_imagegen_generation_ms_sum", "tiny-sdxl")] > 0
