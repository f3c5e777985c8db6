"""Where the CPU goes while the app serves a closed loop: CPU share per process and per hop.

Starts the app (one replica per deployment, ``benchmarks/server.py``), runs a warm-up
and then a measured closed loop of the step-mix workload, and reads every process's
CPU time (psutil) before and after. Also reports the model's UNet calls per second
and mean rows per call over the measured window (``/v1/stats``). Used to split a gap
between served and raw throughput into the model's work and everything beside it.

With ``--profile DIR`` the measured window is also sampled by ``py-spy`` in every
Python process of the app's own Ray instance (``benchmarks/hop_profile.py``), and the
report is a table per hop: proxy, ingress, model (torch vs the loop's own Python),
encoder, Ray core; stacks and SVG flame graphs go to DIR.

    python -m benchmarks.cpu_split --threads 2 --concurrency 16
    python -m benchmarks.cpu_split --concurrency 8 --workload benchmarks/workloads/png-64.json \
        --generation-scale 1 --profile benchmarks/results/profiles --out FILE.json
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

from benchmarks import hop_profile
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
        processes = hop_profile.app_processes()
        recorders = {}
        if args.profile is not None:
            recorders = hop_profile.start_recording(processes, args.duration, args.profile)
        hop_before = hop_profile.cpu_times(list(processes))
        cpu_before, started = cpu_seconds(), time.perf_counter()
        samples = await closed_loop(
            client, workload, args.concurrency, args.requests, args.duration, 0
        )
        elapsed, cpu_after = time.perf_counter() - started, cpu_seconds()
        hop_after = hop_profile.cpu_times(list(processes))
        hop_profile.wait_recording(recorders)
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
    served = summarize(samples)
    hop_cpu = {pid: hop_after[pid] - hop_before[pid] for pid in hop_after if pid in hop_before}
    hops = hop_profile.hop_report(
        processes, hop_cpu, recorders, elapsed, int(served.get("images", 0)), args.profile
    )
    images = int(served.get("images", 0))
    return {
        "served": served,
        "hops": hops,
        "cpu_outside_torch": hop_profile.cpu_outside_torch(hops, images) if recorders else {},
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
    parser.add_argument(
        "--generation-scale", type=float, default=None, help="override the model's (1: as asked)"
    )
    parser.add_argument("--profile", type=Path, default=None, help="py-spy each hop; files here")
    parser.add_argument("--out", type=Path, default=None, help="JSON file to write")
    args = parser.parse_args()
    workload = Workload.load(args.workload)
    overrides: dict[str, Any] = {"torch_threads": args.threads}
    if args.generation_scale is not None:
        overrides["generation_scale"] = args.generation_scale
    with started_server(args.port, **overrides) as url:
        result = asyncio.run(measure(url, args, workload))
    served = result["served"]
    print(
        f"torch_threads={args.threads} c={args.concurrency}: "
        f"{served['images_per_s']:.2f} images/s, p50 {served['p50_latency_ms']:.0f} ms, "
        f"{result['unet_calls_per_s']:.1f} UNet calls/s of {result['mean_rows_per_call']:.1f} rows"
    )
    for entry in result["cpu_share_of_one_core"][:8]:
        print(f"  {entry['share'] * 100:6.1f}% of a core  {entry['process']}")
    print(hop_profile.markdown(result["hops"]))
    if result["cpu_outside_torch"]:
        print("CPU ms per image outside torch:", result["cpu_outside_torch"])
    if args.out is not None:
        config = {key: str(value) for key, value in vars(args).items()}
        args.out.write_text(json.dumps({"config": config, **result}, indent=1))


if __name__ == "__main__":
    main()
