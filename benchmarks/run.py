"""The whole comparison in one invocation: raw pipeline, naive serving, this server.

1. The raw diffusers pipeline in-process at batch sizes 1..16 (the ceiling).
2. PNG encoding per core: Pillow's default level vs. ours.
3. This server (batching on), closed-loop sweep over ``--concurrency``.
4. The same app with ``max_batch_size: 1`` (the naive one-request-per-call pattern).

Then the target ratios, computed from this one run, go into the report.

    python -m benchmarks.run --out benchmarks/results/cpu-tiny

``--compare`` runs the other comparison instead: the raw pipeline, a LitServe server
and this server on the same weights, interleaved in rounds (``benchmarks/compare.py``;
its own flags follow ``--compare``).
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import platform
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from benchmarks import compare, encoder_bench, raw_pipeline
from benchmarks.loadgen import add_arguments, sweep
from benchmarks.report import markdown, write_report
from benchmarks.server import ROOT, model_config, started_server
from benchmarks.workload import Workload


def best(rows: list[dict[str, Any]], key: str = "images_per_s") -> float:
    return max(r["stats"][key] for r in rows if r["mode"] == "concurrency")


def at(rows: list[dict[str, Any]], level: int, key: str) -> float:
    return next(r["stats"][key] for r in rows if r["mode"] == "concurrency" and r["value"] == level)


def targets(raw: list[dict[str, float]], runs: dict[str, list[dict[str, Any]]]) -> dict[str, Any]:
    raw_best = max(r["images_per_s"] for r in raw)
    raw_single_ms = next(r["latency_ms"] for r in raw if r["batch_size"] == 1)
    served, naive = runs["batched"], runs["naive"]
    top = max(r["value"] for r in served if r["mode"] == "concurrency")
    return {
        "raw_best_images_per_s": raw_best,
        "raw_single_latency_ms": raw_single_ms,
        "served_over_raw_best": {"value": best(served) / raw_best, "target_min": 0.90},
        "p50_c1_over_raw_single": {
            "value": at(served, 1, "p50_latency_ms") / raw_single_ms,
            "target_max": 1.10,
        },
        f"batched_over_naive_c{top:g}": {
            "value": at(served, top, "images_per_s") / at(naive, top, "images_per_s"),
            "target_min": 1.5,
        },
    }


def main() -> None:
    if "--compare" in sys.argv[1:]:
        compare.main([arg for arg in sys.argv[1:] if arg != "--compare"])
        return
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--config", type=Path, default=ROOT / "serve_config.yaml")
    parser.add_argument("--batch-sizes", default="1,2,4,8,16")
    parser.add_argument("--port", type=int, default=8766)
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/cpu-tiny"))
    add_arguments(parser)
    args = parser.parse_args()
    workload = Workload.load(args.workload)
    model = model_config(args.config)

    # 1-2. In-process measurements first, while nothing else runs.
    batch_sizes = [int(x) for x in args.batch_sizes.split(",")]
    raw = raw_pipeline.measure(model, workload.bodies[0], batch_sizes)
    gc.collect()
    encoder = encoder_bench.measure()
    # 3-4. The served runs, one server at a time.
    runs: dict[str, list[dict[str, Any]]] = {}
    with started_server(args.port, args.config) as url:
        runs["batched"] = asyncio.run(sweep(url, args, workload))
    naive = {"batching": {"max_batch_size": 1}, "max_images_per_request": 1}
    with started_server(args.port + 1, args.config, **naive) as url:
        runs["naive"] = asyncio.run(sweep(url, args, workload))

    config = {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()}
    config["date"] = datetime.now(UTC).isoformat(timespec="seconds")
    config["machine"] = (
        f"{platform.machine()} {__import__('os').cpu_count()} cpus, {platform.python_version()}"
    )
    config["model"] = model
    ratios = targets(raw, runs)
    write_report(
        args.out,
        config,
        runs,
        ratios["raw_best_images_per_s"],
        extra={"raw_pipeline": raw, "png_encoder": encoder, "targets": ratios},
    )
    print(markdown(runs))
    for row in raw:
        rate, ms = row["images_per_s"], row["latency_ms"]
        print(f"raw bs={row['batch_size']}: {rate:.2f} img/s, {ms:.0f} ms/call")
    for row in encoder:
        print(f"png {row['setting']}: {row['encodes_per_s']:.1f}/s, {row['bytes']} bytes")
    for name, value in ratios.items():
        print(name, value)


if __name__ == "__main__":
    main()
