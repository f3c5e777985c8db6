"""Soak: thousands of mixed requests through one step-mode model replica; RSS growth.

Requests are tiny (256/512 px outputs, so 32/64 px generation on the tiny model, 2-4
steps, n 1-2), streamed and plain, and every ``--cancel-every``-th one is abandoned
by its client mid-flight. The model replica's RSS is read (psutil, on the replica's
own process) after the warm-up and at the end; growth must stay under 5%.

    python -m benchmarks.soak --requests 2000 --out benchmarks/results/soak
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import random
import shutil
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx

from benchmarks.server import ROOT, app_args

GEN = "/v1/images/generations"


def replica_rss() -> int:
    """RSS in bytes of the (one) model replica's process."""
    import psutil
    import ray

    [name] = [
        a["name"] for a in ray.util.list_named_actors(all_namespaces=True) if "#Model:" in a["name"]
    ]
    actor = ray.get_actor(name, namespace="serve")
    pid = ray.get(actor.__ray_call__.remote(lambda self: __import__("os").getpid()))
    return psutil.Process(pid).memory_info().rss


def body(rng: random.Random, i: int) -> dict[str, Any]:
    return {
        "prompt": f"soak {i % 17}",
        "size": rng.choice(["256x256", "512x512"]),
        "n": rng.choice([1, 1, 2]),
        "num_inference_steps": rng.choice([2, 3, 4]),
        "seed": i,
    }


def rng_delay(b: dict[str, Any]) -> float:
    """When the client of a cancelled request gives up: somewhere inside its run."""
    return 0.02 + (b["seed"] % 10) * 0.04


async def one(client: httpx.AsyncClient, b: dict[str, Any], stream: bool, cancel: bool) -> str:
    if stream:
        b = {**b, "stream": True, "partial_images": 1}
    try:
        if cancel:  # the client goes away mid-flight
            await asyncio.wait_for(client.post(GEN, json=b), timeout=rng_delay(b))
            return "done-before-cancel"
        async with client.stream("POST", GEN, json=b) as response:
            await response.aread()
            return str(response.status_code)
    except TimeoutError:
        return "cancelled"
    except httpx.HTTPError as exc:
        return type(exc).__name__


async def run(
    url: str, total: int, concurrency: int, cancel_every: int, seed: int
) -> dict[str, int]:
    rng = random.Random(seed)
    outcomes: dict[str, int] = {}
    queue: asyncio.Queue[int] = asyncio.Queue()
    for i in range(total):
        queue.put_nowait(i)
    limits = httpx.Limits(max_connections=None)
    async with httpx.AsyncClient(base_url=url, timeout=300, limits=limits) as client:

        async def worker() -> None:
            while not queue.empty():
                i = queue.get_nowait()
                result = await one(client, body(rng, i), i % 3 == 0, i % cancel_every == 0)
                outcomes[result] = outcomes.get(result, 0) + 1

        await asyncio.gather(*(worker() for _ in range(concurrency)))
    return outcomes


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--requests", type=int, default=2000)
    parser.add_argument("--warmup", type=int, default=200)
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--cancel-every", type=int, default=10)
    parser.add_argument("--port", type=int, default=8795)
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks/results/soak")
    args = parser.parse_args()

    import ray
    from ray import serve

    from serve_app.app import build_app

    config = app_args(ROOT / "serve_config.yaml")
    config["models"][0]["deployment"]["ray_actor_options"] = {"num_cpus": 0.5}
    ray_dir = tempfile.mkdtemp(prefix="ray-", dir="/tmp")
    ray.init(address="local", include_dashboard=False, _temp_dir=ray_dir, log_to_driver=False)
    try:
        serve.start(http_options={"host": "127.0.0.1", "port": args.port})
        serve.run(build_app(config), name="soak", route_prefix="/")
        url = f"http://127.0.0.1:{args.port}"
        warm = asyncio.run(run(url, args.warmup, args.concurrency, args.cancel_every, 1))
        time.sleep(2)
        rss_warm = replica_rss()
        started = time.monotonic()
        outcomes = asyncio.run(run(url, args.requests, args.concurrency, args.cancel_every, 2))
        elapsed = time.monotonic() - started
        time.sleep(2)
        rss_end = replica_rss()
        stats = httpx.get(f"{url}/v1/stats", timeout=30).json()["models"]
    finally:
        ray.shutdown()
        shutil.rmtree(ray_dir, ignore_errors=True)
    growth = rss_end / rss_warm - 1
    doc = {
        "config": {
            **{k: str(v) for k, v in vars(args).items()},
            "date": datetime.now(UTC).isoformat(timespec="seconds"),
            "machine": f"{platform.machine()}, {os.cpu_count()} cpus",
        },
        "stats": {
            "warmup_outcomes": warm,
            "outcomes": outcomes,
            "elapsed_s": elapsed,
            "rss_after_warmup_mib": rss_warm / 2**20,
            "rss_at_end_mib": rss_end / 2**20,
            "rss_growth": growth,
            "target_max_growth": 0.05,
            "model_stats": stats,
        },
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.with_suffix(".json").write_text(json.dumps(doc, indent=1))
    print(json.dumps(doc["stats"], indent=1)[:3000])


if __name__ == "__main__":
    main()
