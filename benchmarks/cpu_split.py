"""Where the CPU goes while the app serves a closed loop: CPU share per process.

Starts the app (one replica per deployment, ``benchmarks/server.py``), runs a warm-up
and then a measured closed loop of the step-mix workload, and reads every process's
CPU time (psutil) before and after. Also reports the model's UNet calls per second
and mean rows per call over the measured window (``/v1/stats``). Used to split a gap
between served and raw throughput into the model's work and everything beside it.

    python -m benchmarks.cpu_split --threads 2 --concurrency 16
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time
from pathlib import Path
from typing import Any

import httpx
import psutil

from benchmarks.loadgen import closed_loop
from benchmarks.server import ROOT, started_server
from benchmarks.stats import histogram_delta, mean_batch, summarize
from benchmarks.workload import Workload


def cpu_seconds() -> dict[int, tuple[str, float]]:
    """Every process's name (its command line, cut) and user+system CPU seconds."""
    out = {}
    for proc in psutil.process_iter(["pid", "cmdline", "name"]):
        try:
            name = " ".join(proc.info["cmdline"] or [proc.info["name"]])[:60]
            times = proc.cpu_times()
            out[proc.pid] = (name, times.user + times.system)
        except psutil.Error:
            continue
    return out


def rows_per_call(before: dict[str, Any], after: dict[str, Any]) -> tuple[int, float]:
    """UNet calls between two ``/v1/stats`` snapshots, and their mean image rows."""
    delta = histogram_delta(before["rows_per_call_histogram"], after["rows_per_call_histogram"])
    return sum(delta.values()), mean_batch(delta)


async def measure(url: str, args: argparse.Namespace, workload: Workload) -> dict[str, Any]:
    async with httpx.AsyncClient(base_url=url, timeout=600) as client:
        await closed_loop(client, workload, args.concurrency, args.warmup, 120, 0)
        stats_before = (await client.get("/v1/stats")).json()["models"]
        cpu_before, started = cpu_seconds(), time.perf_counter()
        samples = await closed_loop(
            client, workload, args.concurrency, args.requests, args.duration, 0
        )
        elapsed, cpu_after = time.perf_counter() - started, cpu_seconds()
        stats_after = (await client.get("/v1/stats")).json()["models"]
    model = next(iter(stats_after))
    calls, mean_rows = rows_per_call(stats_before[model], stats_after[model])
    shares = sorted(
        (
            ((cpu_after[pid][1] - cpu_before[pid][1]) / elapsed, cpu_after[pid][0])
            for pid in cpu_after
            if pid in cpu_before
        ),
        reverse=True,
    )
    return {
        "served": summarize(samples),
        "unet_calls_per_s": calls / elapsed,
        "mean_rows_per_call": mean_rows,
        "cpu_share_of_one_core": [
            {"process": name, "share": share} for share, name in shares if share >= 0.005
        ],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--threads", type=int, default=2, help="the model's torch_threads")
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--requests", type=int, default=64)
    parser.add_argument("--duration", type=float, default=40.0)
    parser.add_argument("--warmup", type=int, default=8)
    parser.add_argument(
        "--workload", type=Path, default=ROOT / "benchmarks/workloads/steps-mix.json"
    )
    parser.add_argument("--port", type=int, default=8791)
    parser.add_argument("--out", type=Path, default=None, help="JSON file to write")
    args = parser.parse_args()
    workload = Workload.load(args.workload)
    with started_server(args.port, torch_threads=args.threads) as url:
        result = asyncio.run(measure(url, args, workload))
    served = result["served"]
    print(
        f"torch_threads={args.threads} c={args.concurrency}: "
        f"{served['images_per_s']:.2f} images/s, p50 {served['p50_latency_ms']:.0f} ms, "
        f"{result['unet_calls_per_s']:.1f} UNet calls/s of {result['mean_rows_per_call']:.1f} rows"
    )
    for entry in result["cpu_share_of_one_core"][:8]:
        print(f"  {entry['share'] * 100:6.1f}% of a core  {entry['process']}")
    if args.out is not None:
        config = {key: str(value) for key, value in vars(args).items()}
        args.out.write_text(json.dumps({"config": config, **result}, indent=1))


if __name__ == "__main__":
    main()
