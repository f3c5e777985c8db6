"""DeepCache ``cache_interval``: latency of a 20-step request with and without it, side by side.

Two modes, each running every interval in the same invocation, interleaved round-robin
(so load from anything else on the machine hits all of them alike), warm-up excluded:

- ``engine``: the real diffusers engine (``DiffusersEngine``) in-process, one pipeline call
  per request, exactly what a model replica runs for one job.
- ``http``: whole requests in the imagine dialect against a running server
  (``--url``), e.g. one started with ``serve run serve_config.yaml``.

Writes JSON ``{config, stats, raw}`` and a markdown table. Example::

    .venv/bin/python benchmarks/cache_interval.py --mode engine --intervals 0 2 3 5 \\
        --steps 20 --size 128 --repeats 15 --out benchmarks/results/cache_interval_engine
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def engine_runner(args: argparse.Namespace) -> Callable[[int], tuple[float, np.ndarray]]:
    from common.job import GenerationJob
    from common.model_config import ModelConfig
    from deployments.model.request_mode.batching import group_jobs
    from deployments.model.request_mode.engine import DiffusersEngine

    config = {"id": "tiny-sdxl", "source": args.source, "torch_threads": args.threads}
    engine = DiffusersEngine(ModelConfig.model_validate(config))

    def run(interval: int) -> tuple[float, np.ndarray]:
        job = GenerationJob(
            request_id="bench",
            prompt="a lighthouse at dusk",
            negative_prompt="blurry",
            seeds=tuple(range(args.batch)),
            gen_width=args.size,
            gen_height=args.size,
            steps=args.steps,
            guidance=args.guidance,
            cache_interval=interval or None,
        )
        [group] = group_jobs([job])
        started = time.perf_counter()
        images = engine.generate(group).images
        return time.perf_counter() - started, images

    return run


def http_runner(args: argparse.Namespace) -> Callable[[int], tuple[float, np.ndarray]]:
    import base64
    import io

    import httpx
    from PIL import Image

    client = httpx.Client(base_url=args.url, timeout=600)

    def run(interval: int) -> tuple[float, np.ndarray]:
        body: dict[str, Any] = {
            "prompt": "a lighthouse at dusk",
            "model": args.model,
            "n": args.batch,
            "seed": 0,
            "seed_increment": 1,
            "num_inference_steps": args.steps,
            "size": f"{args.http_size}x{args.http_size}",
            "guidance_scale": args.guidance,
        }
        if interval:
            body["cache_interval"] = interval
        started = time.perf_counter()
        response = client.post("/v1/images/generations", json=body)
        elapsed = time.perf_counter() - started
        response.raise_for_status()
        images = [
            np.asarray(Image.open(io.BytesIO(base64.b64decode(d["b64_json"]))).convert("RGB"))
            for d in response.json()["data"]
        ]
        return elapsed, np.stack(images)

    return run


def summarize(raw: dict[int, list[float]], diffs: dict[int, float]) -> dict[str, Any]:
    base = statistics.median(raw[0]) if 0 in raw else None
    base_min = min(raw[0]) if 0 in raw else None
    stats = {}
    for interval, times in raw.items():
        median = statistics.median(times)
        fastest = min(times)
        quantiles = statistics.quantiles(times, n=10) if len(times) > 1 else [median] * 9
        stats[str(interval)] = {
            "cache_interval": interval or None,
            "min_latency_ms": round(fastest * 1000, 1),
            "p50_latency_ms": round(median * 1000, 1),
            "p10_latency_ms": round(quantiles[0] * 1000, 1),
            "p90_latency_ms": round(quantiles[-1] * 1000, 1),
            "speedup_vs_no_cache": round(base / median, 3) if base else None,
            # On a shared machine the minimum is the least disturbed run of each.
            "speedup_vs_no_cache_min": round(base_min / fastest, 3) if base_min else None,
            "mean_abs_pixel_diff_vs_no_cache": round(diffs[interval], 3),
        }
    return stats


def markdown(config: dict[str, Any], stats: dict[str, Any]) -> str:
    lines = [
        f"Mode `{config['mode']}`, {config['steps']} steps, batch {config['batch']}, "
        f"{config['repeats']} interleaved repeats after {config['warmup']} warm-up rounds.",
        "",
        "| cache_interval | min ms | p10 ms | p50 ms | p90 ms | speedup (min) | speedup (p50) "
        "| mean abs pixel diff (0-255) |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for row in stats.values():
        lines.append(
            f"| {row['cache_interval'] or 'off'} | {row['min_latency_ms']} | "
            f"{row['p10_latency_ms']} | {row['p50_latency_ms']} | {row['p90_latency_ms']} | "
            f"{row['speedup_vs_no_cache_min']} | {row['speedup_vs_no_cache']} | "
            f"{row['mean_abs_pixel_diff_vs_no_cache']} |"
        )
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--mode", choices=["engine", "http"], default="engine")
    parser.add_argument(
        "--intervals",
        type=int,
        nargs="+",
        default=[0, 2, 3, 5],
        help="0 means no cache (the baseline)",
    )
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--guidance", type=float, default=5.0)
    parser.add_argument("--size", type=int, default=128, help="engine: generation side in px")
    parser.add_argument("--http-size", type=int, default=1024, help="http: requested side")
    parser.add_argument("--source", default="builtin:tiny-sdxl")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--url", default="http://127.0.0.1:8000")
    parser.add_argument("--model", default="tiny-sdxl")
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=15)
    parser.add_argument("--out", type=Path, required=True, help="path prefix for .json/.md")
    args = parser.parse_args()
    if 0 not in args.intervals:
        args.intervals.insert(0, 0)

    run = engine_runner(args) if args.mode == "engine" else http_runner(args)
    load_before = os.getloadavg()
    for _ in range(args.warmup):
        for interval in args.intervals:
            run(interval)
    raw: dict[int, list[float]] = {i: [] for i in args.intervals}
    images: dict[int, np.ndarray] = {}
    for rep in range(args.repeats):
        # Rotate the order each round so no interval always runs first.
        shift = rep % len(args.intervals)
        for interval in args.intervals[shift:] + args.intervals[:shift]:
            elapsed, out = run(interval)
            raw[interval].append(elapsed)
            images[interval] = out
    diffs = {i: float(np.abs(images[i].astype(int) - images[0].astype(int)).mean()) for i in images}
    config = {
        **{k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
        "command": " ".join([Path(sys.executable).name, *sys.argv]),
        "date": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
        "machine": f"{platform.node()} {platform.machine()}, {os.cpu_count()} cpus",
        "load_average_before": [round(x, 2) for x in load_before],
        "load_average_after": [round(x, 2) for x in os.getloadavg()],
    }
    stats = summarize(raw, diffs)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    raw_ms = {str(k): [round(t * 1000, 2) for t in v] for k, v in raw.items()}
    payload = {"config": config, "stats": stats, "raw": {"latency_ms": raw_ms}}
    args.out.with_suffix(".json").write_text(json.dumps(payload, indent=2) + "\n")
    table = markdown(config, stats)
    args.out.with_suffix(".md").write_text(table)
    print(table)


if __name__ == "__main__":
    main()
