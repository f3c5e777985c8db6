"""Streaming benchmark: time to first preview vs. time to final, and what streaming costs.

Two measurements against one OpenAI-compatible server, side by side in one run:

1. Latency, sequential: for ``--latency-requests`` streamed requests, the time to the
   first ``partial_image`` event and to the ``completed`` event.
2. Throughput at ``--concurrency``: rounds alternate between ``C`` concurrent plain
   requests and ``C`` concurrent streamed requests (with ``--partial-images``), so
   both modes see the same machine conditions; images/s per mode and their ratio.

Warm-up requests are excluded. ``--start`` launches the app from serve_config.yaml in
a private Ray instance (fractional CPUs, one model replica) and stops it afterwards.

    python -m benchmarks.stream_latency --start --out benchmarks/results/stream_latency
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx

from benchmarks.server import started_server

ROUTE = "/v1/images/generations"


def stream_once(client: httpx.Client, body: dict[str, Any]) -> dict[str, float]:
    """One streamed request; seconds to the first preview and to the last final."""
    start = time.perf_counter()
    first_partial = None
    finals = 0
    with client.stream("POST", ROUTE, json={**body, "stream": True}) as response:
        response.raise_for_status()
        for line in response.iter_lines():
            if line.startswith("event: image_generation.partial_image") and first_partial is None:
                first_partial = time.perf_counter() - start
            elif line.startswith("event: image_generation.completed"):
                finals += 1
            elif line.startswith("event: error"):
                raise RuntimeError("error event in stream")
    total = time.perf_counter() - start
    if finals != body.get("n", 1):
        raise RuntimeError(f"expected {body.get('n', 1)} completed events, got {finals}")
    return {"first_partial_s": first_partial or float("nan"), "final_s": total}


def plain_once(client: httpx.Client, body: dict[str, Any]) -> dict[str, float]:
    start = time.perf_counter()
    response = client.post(ROUTE, json=body)
    response.raise_for_status()
    return {"final_s": time.perf_counter() - start}


def run_round(
    client: httpx.Client, body: dict[str, Any], concurrency: int, streamed: bool
) -> dict[str, Any]:
    call = stream_once if streamed else plain_once
    start = time.perf_counter()
    with ThreadPoolExecutor(max_workers=concurrency) as pool:
        results = list(pool.map(lambda _: call(client, body), range(concurrency)))
    elapsed = time.perf_counter() - start
    return {
        "streamed": streamed,
        "elapsed_s": elapsed,
        "images": concurrency * body.get("n", 1),
        "latencies_s": [r["final_s"] for r in results],
    }


def percentile_ms(values: list[float], q: float) -> float:
    ordered = sorted(values)
    index = min(len(ordered) - 1, round(q / 100 * (len(ordered) - 1)))
    return ordered[index] * 1000


def benchmark(url: str, args: argparse.Namespace) -> dict[str, Any]:
    body = {"prompt": "a harbour at dawn", "size": args.size, "partial_images": args.partial_images}
    with httpx.Client(base_url=url, timeout=600) as client:
        for _ in range(args.warmup):  # excluded
            stream_once(client, body)
            plain_once(client, body)
        latency = [stream_once(client, body) for _ in range(args.latency_requests)]
        rounds = []
        for _ in range(args.rounds):
            rounds.append(run_round(client, body, args.concurrency, streamed=False))
            rounds.append(run_round(client, body, args.concurrency, streamed=True))
    stats: dict[str, Any] = {
        "first_partial_p50_ms": statistics.median(r["first_partial_s"] for r in latency) * 1000,
        "final_p50_ms": statistics.median(r["final_s"] for r in latency) * 1000,
    }
    stats["first_partial_over_final"] = stats["first_partial_p50_ms"] / stats["final_p50_ms"]
    for mode, streamed in (("plain", False), ("streamed", True)):
        mine = [r for r in rounds if r["streamed"] == streamed]
        lat = [x for r in mine for x in r["latencies_s"]]
        stats[f"{mode}_images_per_s"] = sum(r["images"] for r in mine) / sum(
            r["elapsed_s"] for r in mine
        )
        stats[f"{mode}_p50_latency_ms"] = percentile_ms(lat, 50)
        stats[f"{mode}_p99_latency_ms"] = percentile_ms(lat, 99)
    stats["streamed_over_plain_throughput"] = (
        stats["streamed_images_per_s"] / stats["plain_images_per_s"]
    )
    return {"stats": stats, "raw": {"latency": latency, "rounds": rounds}}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--url", default="http://127.0.0.1:8000")
    parser.add_argument("--start", action="store_true", help="start the app in-process")
    parser.add_argument("--port", type=int, default=8765)
    parser.add_argument("--size", default="1024x1024")
    parser.add_argument("--partial-images", type=int, default=2)
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--latency-requests", type=int, default=10)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/stream_latency"))
    args = parser.parse_args()

    if args.start:
        with started_server(args.port) as url:
            result = benchmark(url, args)
    else:
        result = benchmark(args.url, args)
    config = {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()}
    config["date"] = datetime.now(UTC).isoformat(timespec="seconds")
    config["machine"] = (
        f"{platform.node()} {platform.machine()} cpus={__import__('os').cpu_count()}"
    )
    report = {"config": config, **result}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.with_suffix(".json").write_text(json.dumps(report, indent=2))
    s = result["stats"]
    table = "\n".join(
        [
            "| metric | value |",
            "|---|---|",
            *(f"| {k} | {v:.3f} |" for k, v in s.items()),
        ]
    )
    args.out.with_suffix(".md").write_text(table + "\n")
    print(table)


if __name__ == "__main__":
    main()
