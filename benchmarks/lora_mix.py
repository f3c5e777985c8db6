"""LoRA adapters under load: images/s with none, one for all, and 4 distinct interleaved.

One invocation starts the app (``benchmarks/server.py``: one replica per deployment)
and runs the three workloads at the same closed-loop concurrency, in rounds, rotating
their order every round so whatever else loads the machine hits all three alike.
Warm-up is excluded. Also measured: first-use load latency of an adapter the replica
has never seen (a fresh copy of a demo adapter under a new name), as the replica's own
load time (``/v1/stats`` ``loras_loaded``) and as the first request's extra latency.

    python -m benchmarks.lora_mix --concurrency 8 --rounds 4 --requests 24 \\
        --out benchmarks/results/lora_mix
"""

from __future__ import annotations

import argparse
import asyncio
import json
import platform
import shutil
import statistics
import time
from pathlib import Path
from typing import Any

import httpx

from benchmarks.server import started_server
from common.paths import default_cache_root

ROUTE = "/v1/images/generations"
DEMOS = ("demo-1", "demo-2", "demo-3", "demo-4")
MODES = ("none", "one", "four")


def body(mode: str, index: int, args: argparse.Namespace) -> dict[str, Any]:
    loras: list[dict[str, Any]] = []
    if mode == "one":
        loras = [{"path": DEMOS[0], "scale": 1.0}]
    elif mode == "four":
        loras = [{"path": DEMOS[index % 4], "scale": 1.0}]
    return {
        "model": "tiny-sdxl",
        "prompt": "a lighthouse at dusk",
        "width": args.size,
        "height": args.size,
        "steps": args.steps,
        "seed": index,
        "output_format": "png",
        "image_loras": loras,
    }


async def closed_loop(
    client: httpx.AsyncClient, mode: str, args: argparse.Namespace
) -> dict[str, Any]:
    latencies: list[float] = []
    failures = 0
    issued = 0

    async def worker() -> None:
        nonlocal issued, failures
        while issued < args.requests:
            index = issued
            issued += 1
            started = time.perf_counter()
            response = await client.post(ROUTE, json=body(mode, index, args))
            if response.status_code != 200:
                failures += 1
            latencies.append(time.perf_counter() - started)

    started = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(args.concurrency)))
    wall = time.perf_counter() - started
    return {"mode": mode, "wall_s": wall, "latencies_s": latencies, "failures": failures}


async def first_use(client: httpx.AsyncClient, args: argparse.Namespace) -> dict[str, Any]:
    """A never-seen adapter: the first request pays the load, the second does not."""
    folder = default_cache_root() / "loras"
    name = f"bench-fresh-{int(time.time())}"
    shutil.copy(folder / f"{DEMOS[0]}.safetensors", folder / f"{name}.safetensors")
    request = body("none", 0, args) | {"image_loras": [{"path": name, "scale": 1.0}]}
    timings = []
    for _ in range(2):
        started = time.perf_counter()
        response = await client.post(ROUTE, json=request)
        response.raise_for_status()
        timings.append(time.perf_counter() - started)
    stats = (await client.get("/v1/stats")).json()["models"]["tiny-sdxl"]
    (folder / f"{name}.safetensors").unlink()
    return {
        "first_request_ms": timings[0] * 1000,
        "second_request_ms": timings[1] * 1000,
        "replica_load_ms": stats["loras_loaded"][name]["load_ms"],
    }


async def run(url: str, args: argparse.Namespace) -> dict[str, Any]:
    async with httpx.AsyncClient(base_url=url, timeout=600) as client:
        for mode in MODES:  # warm-up: every adapter loaded, every path taken once
            await asyncio.gather(*(client.post(ROUTE, json=body(mode, i, args)) for i in range(4)))
        raw: list[dict[str, Any]] = []
        for round_ in range(args.rounds):
            order = MODES[round_ % 3 :] + MODES[: round_ % 3]
            for mode in order:
                raw.append({"round": round_, **await closed_loop(client, mode, args)})
        load = await first_use(client, args)
        stats = (await client.get("/v1/stats")).json()
    summary = {}
    for mode in MODES:
        runs = [r for r in raw if r["mode"] == mode]
        images = sum(len(r["latencies_s"]) - r["failures"] for r in runs)
        wall = sum(r["wall_s"] for r in runs)
        per_round = [(len(r["latencies_s"]) - r["failures"]) / r["wall_s"] for r in runs]
        lat = [x for r in runs for x in r["latencies_s"]]
        summary[mode] = {
            "images_per_s": images / wall,
            "images_per_s_per_round": per_round,
            "median_round_images_per_s": statistics.median(per_round),
            "p50_latency_ms": statistics.median(lat) * 1000,
            "failures": sum(r["failures"] for r in runs),
        }
    base = summary["none"]["images_per_s"]
    for mode in MODES:
        summary[mode]["ratio_to_none"] = summary[mode]["images_per_s"] / base
    return {
        "config": {**vars(args), "machine": platform.machine(), "note": "shared 2-core VM"},
        "stats": {"throughput": summary, "first_use": load},
        "raw": {"runs": raw, "server_stats": stats},
    }


def markdown(result: dict[str, Any], command: str) -> str:
    t, load = result["stats"]["throughput"], result["stats"]["first_use"]
    lines = [
        "# LoRA adapters under load: none vs one vs 4 distinct interleaved",
        "",
        f"Command: `{command}`",
        "",
        "The machine was shared with other engineers' work while this ran (2 cores); the",
        "three workloads run in rounds with their order rotated each round, so that load",
        "hits all of them alike. Mixed adapters share UNet calls (per-row deltas).",
        "",
        "| workload | images/s | median round images/s | p50 latency ms | vs none |",
        "|---|---|---|---|---|",
    ]
    for mode, label in zip(MODES, ("no adapters", "one adapter", "4 interleaved"), strict=True):
        s = t[mode]
        lines.append(
            f"| {label} | {s['images_per_s']:.2f} | {s['median_round_images_per_s']:.2f} | "
            f"{s['p50_latency_ms']:.0f} | {s['ratio_to_none']:.2f}x |"
        )
    lines += [
        "",
        f"First use of a never-seen adapter: replica load {load['replica_load_ms']:.1f} ms; "
        f"first request {load['first_request_ms']:.0f} ms vs {load['second_request_ms']:.0f} ms "
        "for the next one (same request, adapter loaded).",
    ]
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--requests", type=int, default=24, help="per workload per round")
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--size", type=int, default=512, help="output side (generated at 1/8)")
    parser.add_argument("--port", type=int, default=8123)
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/lora_mix"))
    args = parser.parse_args()
    command = "python -m benchmarks.lora_mix " + " ".join(
        f"--{k} {v}" for k, v in vars(args).items() if k != "port"
    )
    with started_server(args.port) as url:
        result = asyncio.run(run(url, args))
    result["config"]["out"] = str(args.out)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.with_suffix(".json").write_text(json.dumps(result, indent=1, default=str))
    args.out.with_suffix(".md").write_text(markdown(result, command))
    print(markdown(result, command))


if __name__ == "__main__":
    main()
