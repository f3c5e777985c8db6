"""Ray's own fast path, off vs on: ``RAY_SERVE_ENABLE_HA_PROXY=1`` (HAProxy as the HTTP
ingress) together with ``RAY_SERVE_THROUGHPUT_OPTIMIZED=1`` (gRPC between replicas,
user code on the replica's loop), on this app's workload.

Ray Serve reads both switches once, when its modules are imported, so every setting
runs in its own child process with its own private Ray instance
(``benchmarks/server.py``). Rounds interleave the two settings, the order flipping
each round, because this 2-core machine is shared and its load drifts; ``uptime`` is
recorded before every run. Each run measures, after warm-up:

- plain requests in a closed loop at concurrency 8 and at 1 (img/s, p50);
- streamed requests (``stream=true``, 2 previews) at concurrency 8;
- async jobs (``Prefer: respond-async``, then polling the job) at concurrency 8;
- how long ``ray.shutdown()`` takes afterwards.

    python -m benchmarks.ray_fast_path --rounds 3 --out benchmarks/results/ray-fast-path
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx

from benchmarks.stats import Sample, summarize
from serve_app.launcher import DEFAULTS as LAUNCHER_DEFAULTS
from serve_app.launcher import HA_PROXY, THROUGHPUT_OPTIMIZED

ROUTE = "/v1/images/generations"
# The peers' tiny SDXL at 64 px: a 512x512 request generates at 64x64
# (tiny-sdxl's generation_scale 0.125), 20 steps, a small JPEG back.
BODY = {
    "prompt": "a lighthouse on a cliff",
    "size": "512x512",
    "n": 1,
    "output_format": "jpeg",
    "num_inference_steps": 20,
}
# "on" is what the app ships (serve_app/launcher.py); "off" sets both switches to 0, as
# the launcher, tests and benchmark servers would turn them on when left unset.
FAST_PATH_ENV = dict(LAUNCHER_DEFAULTS)
OFF_ENV = {HA_PROXY: "0", THROUGHPUT_OPTIMIZED: "0"}
Call = Callable[[httpx.AsyncClient], Awaitable[Sample]]


async def plain(client: httpx.AsyncClient) -> Sample:
    start = time.perf_counter()
    response = await client.post(ROUTE, json=BODY)
    end = time.perf_counter()
    return Sample(
        start, end, end - start, 1 if response.status_code == 200 else 0, response.status_code
    )


async def streamed(client: httpx.AsyncClient) -> Sample:
    start = time.perf_counter()
    finals, ttfb, status = 0, 0.0, 0
    async with client.stream(
        "POST", ROUTE, json={**BODY, "stream": True, "partial_images": 2}
    ) as r:
        status = r.status_code
        async for line in r.aiter_lines():
            if line.startswith("event: image_generation.partial_image") and not ttfb:
                ttfb = time.perf_counter() - start
            elif line.startswith("event: image_generation.completed"):
                finals += 1
            elif line.startswith("event: error"):
                status = 500
    end = time.perf_counter()
    ok = status == 200 and finals == 1
    return Sample(start, end, ttfb, 1 if ok else 0, status if ok else 500)


async def async_job(client: httpx.AsyncClient) -> Sample:
    start = time.perf_counter()
    response = await client.post(ROUTE, json=BODY, headers={"prefer": "respond-async"})
    ttfb = time.perf_counter() - start
    if response.status_code != 202:
        return Sample(start, time.perf_counter(), ttfb, 0, response.status_code)
    job_id = response.json()["id"]
    while True:
        await asyncio.sleep(0.02)
        record = (await client.get(f"/v1/images/jobs/{job_id}")).json()
        if record["status"] not in ("queued", "running"):
            break
    ok = record["status"] == "succeeded"
    return Sample(start, time.perf_counter(), ttfb, 1 if ok else 0, 200 if ok else 500)


async def closed_loop(
    client: httpx.AsyncClient, call: Call, concurrency: int, requests: int, warmup: int
) -> dict[str, float]:
    await asyncio.gather(*(call(client) for _ in range(warmup)))
    samples: list[Sample] = []
    issued = 0

    async def worker() -> None:
        nonlocal issued
        while issued < requests:
            issued += 1
            samples.append(await call(client))

    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return summarize(samples)


async def measure(url: str, requests: int) -> dict[str, dict[str, float]]:
    limits = httpx.Limits(max_connections=None, max_keepalive_connections=64)
    async with httpx.AsyncClient(base_url=url, timeout=900, limits=limits) as client:
        return {
            "plain_c8": await closed_loop(client, plain, 8, requests, 8),
            "plain_c1": await closed_loop(client, plain, 1, max(requests // 3, 8), 2),
            "stream_c8": await closed_loop(client, streamed, 8, requests, 8),
            "async_c8": await closed_loop(client, async_job, 8, requests, 8),
        }


def run_one(port: int, requests: int, out: Path) -> None:
    """In the child: start the app, measure, stop it and time the stop."""
    import ray

    from benchmarks.server import started_server

    with started_server(port) as url:
        results: dict[str, Any] = asyncio.run(measure(url, requests))
        stop_started = time.perf_counter()
    results["shutdown_s"] = time.perf_counter() - stop_started
    assert not ray.is_initialized()
    out.write_text(json.dumps(results))


def uptime() -> str:
    return subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip()


def free_port() -> int:
    """A port nobody listens on now (the machine is shared: a fixed one may be taken)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def child(setting: str, requests: int) -> dict[str, Any]:
    env = {k: v for k, v in os.environ.items() if k not in FAST_PATH_ENV}
    env.update(FAST_PATH_ENV if setting == "on" else OFF_ENV)
    with tempfile.NamedTemporaryFile(suffix=".json") as out:
        load = uptime()
        command = [sys.executable, "-m", "benchmarks.ray_fast_path", "--one", out.name]
        command += ["--port", str(free_port()), "--requests", str(requests)]
        started = time.perf_counter()
        # On a loaded shared machine Ray's node start can time out: two more tries.
        for _ in range(2):
            if subprocess.run(command, env=env).returncode == 0:
                break
        else:
            subprocess.run(command, env=env, check=True)
        return {
            "setting": setting,
            "uptime_before": load,
            "wall_s": time.perf_counter() - started,
            **json.loads(Path(out.name).read_text()),
        }


def summary(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """Per level: each setting's median over rounds, and on/off per round and median."""
    table: dict[str, Any] = {}
    rounds = sorted({r["round"] for r in runs})
    for level in ("plain_c8", "plain_c1", "stream_c8", "async_c8"):
        for key in ("images_per_s", "p50_latency_ms"):
            per_round = []
            for n in rounds:
                off, on = (
                    next(r[level][key] for r in runs if r["round"] == n and r["setting"] == s)
                    for s in ("off", "on")
                )
                per_round.append({"off": off, "on": on, "on_over_off": on / off})
            table[f"{level}.{key}"] = {
                "rounds": per_round,
                "median_off": statistics.median(p["off"] for p in per_round),
                "median_on": statistics.median(p["on"] for p in per_round),
                "median_on_over_off": statistics.median(p["on_over_off"] for p in per_round),
            }
    return table


def markdown(config: dict[str, Any], table: dict[str, Any], runs: list[dict[str, Any]]) -> str:
    lines = [
        "# Ray's fast path off vs on (HAProxy + throughput-optimized)",
        "",
        f"Command: `{config['command']}`  ",
        f"Date: {config['date']}; machine: {os.cpu_count()} cores; the load average "
        "before each run is in the last table.",
        "",
        "| metric | off per round | on per round | on/off per round | median on/off |",
        "|---|---|---|---|---|",
    ]
    for name, row in table.items():
        offs = " / ".join(f"{p['off']:.2f}" for p in row["rounds"])
        ons = " / ".join(f"{p['on']:.2f}" for p in row["rounds"])
        ratios = " / ".join(f"{p['on_over_off']:.3f}" for p in row["rounds"])
        lines.append(f"| {name} | {offs} | {ons} | {ratios} | {row['median_on_over_off']:.3f} |")
    lines += ["", "| round | setting | errors (c8/c1/stream/async) | shutdown s | uptime before |"]
    lines.append("|---|---|---|---|---|")
    for r in runs:
        errors = "/".join(
            str(int(r[k]["errors"])) for k in ("plain_c8", "plain_c1", "stream_c8", "async_c8")
        )
        lines.append(
            f"| {r['round']} | {r['setting']} | {errors} | {r['shutdown_s']:.1f} | "
            f"{r['uptime_before']} |"
        )
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--requests", type=int, default=48, help="measured requests at c=8")
    parser.add_argument("--port", type=int, default=8790, help=argparse.SUPPRESS)
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/ray-fast-path"))
    parser.add_argument("--one", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one is not None:
        run_one(args.port, args.requests, args.one)
        return
    runs = []
    for n in range(1, args.rounds + 1):
        order = ("off", "on") if n % 2 else ("on", "off")
        for setting in order:
            print(f"round {n}: {setting}", flush=True)
            runs.append({"round": n, **child(setting, args.requests)})
    config = {
        "command": "python -m benchmarks.ray_fast_path " + " ".join(sys.argv[1:]),
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "body": BODY,
        "fast_path_env": FAST_PATH_ENV,
    }
    table = summary(runs)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    doc = {"config": config, "summary": table, "runs": runs}
    args.out.with_suffix(".json").write_text(json.dumps(doc, indent=1))
    args.out.with_suffix(".md").write_text(markdown(config, table, runs))
    print(markdown(config, table, runs))


if __name__ == "__main__":
    main()
