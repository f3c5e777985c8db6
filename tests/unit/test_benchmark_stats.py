"""The benchmark tool's statistics on synthetic samples: computed values, not timings."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from benchmarks.report import markdown
from benchmarks.stats import Sample, histogram_delta, mean_batch, percentile, summarize
from benchmarks.workload import Workload


def test_percentile_interpolates_like_numpy() -> None:
    values = [10.0, 20.0, 30.0, 40.0]
    assert percentile(values, 0) == 10.0
    assert percentile(values, 50) == 25.0
    assert percentile(values, 100) == 40.0
    assert percentile(values, 90) == pytest.approx(37.0)
    assert math.isnan(percentile([], 50))


def test_summarize_throughput_and_latency() -> None:
    # Four requests over 2 s of wall time; one failed and carries no images.
    samples = [
        Sample(start_s=0.0, end_s=0.5, ttfb_s=0.4, images=1, status=200),
        Sample(start_s=0.0, end_s=1.0, ttfb_s=0.9, images=2, status=200),
        Sample(start_s=1.0, end_s=2.0, ttfb_s=0.8, images=1, status=200),
        Sample(start_s=1.5, end_s=1.6, ttfb_s=0.1, images=0, status=503),
    ]
    stats = summarize(samples)
    assert stats["requests"] == 4 and stats["errors"] == 1
    assert stats["duration_s"] == 2.0
    assert stats["images_per_s"] == 2.0  # 4 images / 2 s
    assert stats["requests_per_s"] == 1.5
    assert stats["p50_latency_ms"] == 1000.0  # of 500, 1000, 1000
    assert stats["mean_latency_ms"] == pytest.approx(2500 / 3)
    assert stats["ttfb_ms"] == 800.0


def test_histogram_delta_accepts_json_keys() -> None:
    before = {"1": 3, "4": 1}
    after = {1: 5, 4: 1, 8: 2}
    assert histogram_delta(before, after) == {1: 2, 8: 2}
    assert mean_batch({1: 2, 8: 2}) == 4.5
    assert math.isnan(mean_batch({}))


def test_workload_mix(tmp_path: Path) -> None:
    path = tmp_path / "mix.json"
    path.write_text(
        json.dumps(
            {
                "requests": [
                    {"weight": 3, "body": {"size": "256x256", "n": 1}},
                    {"weight": 1, "body": {"size": "1024x1024", "n": 4}},
                ]
            }
        )
    )
    workload = Workload.load(path)
    assert workload.images_per_request() == pytest.approx(1.75)
    rng = workload.sampler(seed=1)
    drawn = [workload.draw(rng)["size"] for _ in range(400)]
    assert 0.65 < drawn.count("256x256") / 400 < 0.85
    assert all("prompt" in workload.draw(rng) for _ in range(5))


@pytest.mark.parametrize("name", ["default", "mixed"])
def test_shipped_workloads_are_valid(name: str) -> None:
    from serve_app.dialects.openai import parse_generate

    workload = Workload.load(
        Path(__file__).resolve().parents[2] / f"benchmarks/workloads/{name}.json"
    )
    for body in workload.bodies:
        parse_generate(body)


def test_markdown_row_per_level() -> None:
    runs = {
        "batched": [
            {
                "mode": "concurrency",
                "value": 4,
                "stats": {
                    "images_per_s": 3.5,
                    "p50_latency_ms": 100.0,
                    "batch_size_histogram": {1: 1, 3: 2},
                },
            }
        ]
    }
    table = markdown(runs)
    assert "| batched | c=4 | 3.50 | 100.00 |" in table
    assert "1×1, 3×2" in table


def test_benchmark_configs_are_valid_app_configs() -> None:
    from benchmarks.server import app_args
    from common.config import ImageServingArgs

    root = Path(__file__).resolve().parents[2]
    for path in [root / "serve_config.yaml", *sorted((root / "benchmarks/configs").glob("*.yaml"))]:
        args = ImageServingArgs.model_validate(app_args(path))
        assert all(m.deployment.num_replicas == 1 for m in args.models)
    gpu = app_args(root / "benchmarks/configs/sdxl-lightning-gpu.yaml")["models"][0]
    assert gpu["deployment"]["ray_actor_options"]["num_gpus"] == 1
    naive = app_args(
        root / "serve_config.yaml", {"batching": {"max_batch_size": 1}, "max_images_per_request": 1}
    )
    assert ImageServingArgs.model_validate(naive).models[0].batching.max_batch_size == 1


def test_step_batching_targets_table_says_met_or_missed() -> None:
    from benchmarks.step_batching import targets_table

    targets = {
        "raw_best_images_per_s": 6.0,
        "raw_single_latency_ms": 600.0,
        "low_is_good": {"value": 0.78, "target_max": 0.6},
        "high_is_good": {"value": 1.17, "target_min": 1.0},
        "context_only": {"value": 0.95},
    }
    config = {"date": "2026-12-02T16:00", "machine": "x86_64 2 cpus", "loadavg_before": 0.3}
    lines = targets_table(targets, config).splitlines()
    assert "| low_is_good | 0.78 | <= 0.6 | **no** |" in lines
    assert "| high_is_good | 1.17 | >= 1.0 | yes |" in lines
    assert "| context_only | 0.95 | (context) | — |" in lines
    assert any("Raw best batch 6.00 images/s, raw single 600 ms" in line for line in lines)
