"""Load generator for any OpenAI-compatible images endpoint.

Closed loop: ``--concurrency 1,2,4,8,16`` keeps that many requests in flight, one
level after another. Open loop: ``--rate R`` sends Poisson arrivals at R requests/s
whatever the server does. Each level runs warm-up requests first (not counted) and
then stops at ``--requests`` measured requests or ``--duration`` seconds.

Against this server, batch sizes come from ``GET /v1/stats`` (the model
deployment's counters); other servers simply have none.

    python -m benchmarks.loadgen --url http://127.0.0.1:8000 --concurrency 1,4,16 \\
        --workload benchmarks/workloads/default.json --out benchmarks/results/run
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import time
from pathlib import Path
from typing import Any

import httpx
from tqdm import tqdm

from benchmarks.report import write_report
from benchmarks.stats import Sample, histogram_delta, mean_batch, summarize
from benchmarks.workload import Workload

ROUTE = "/v1/images/generations"


async def one_request(client: httpx.AsyncClient, body: dict[str, Any]) -> Sample:
    start = time.perf_counter()
    ttfb = 0.0
    try:
        async with client.stream("POST", ROUTE, json=body) as response:
            ttfb = time.perf_counter() - start
            await response.aread()
            status = response.status_code
    except httpx.HTTPError:
        status = 0
    end = time.perf_counter()
    images = body.get("n", 1) if 200 <= status < 300 else 0
    return Sample(start, end, ttfb, images, status)


async def closed_loop(
    client: httpx.AsyncClient,
    workload: Workload,
    concurrency: int,
    requests: int,
    duration_s: float,
    warmup: int,
    seed: int = 0,
    label: str = "",
) -> list[Sample]:
    """``concurrency`` workers, each sending its next request when the last returns."""
    rng = random.Random(seed)
    await asyncio.gather(*(one_request(client, workload.draw(rng)) for _ in range(warmup)))
    samples: list[Sample] = []
    issued = 0
    deadline = time.perf_counter() + duration_s
    bar = tqdm(total=requests, desc=label or f"c={concurrency}", unit="req", leave=False)

    async def worker() -> None:
        nonlocal issued
        while issued < requests and time.perf_counter() < deadline:
            issued += 1
            samples.append(await one_request(client, workload.draw(rng)))
            bar.update(1)

    await asyncio.gather(*(worker() for _ in range(concurrency)))
    bar.close()
    return samples


async def open_loop(
    client: httpx.AsyncClient,
    workload: Workload,
    rate: float,
    requests: int,
    duration_s: float,
    warmup: int,
    seed: int = 0,
) -> list[Sample]:
    """Poisson arrivals at ``rate``/s; late responses never delay the next arrival."""
    rng = random.Random(seed)
    await asyncio.gather(*(one_request(client, workload.draw(rng)) for _ in range(warmup)))
    tasks: list[asyncio.Task[Sample]] = []
    deadline = time.perf_counter() + duration_s
    bar = tqdm(total=requests, desc=f"rate={rate}/s", unit="req", leave=False)
    while len(tasks) < requests and time.perf_counter() < deadline:
        task = asyncio.create_task(one_request(client, workload.draw(rng)))
        task.add_done_callback(lambda _: bar.update(1))
        tasks.append(task)
        await asyncio.sleep(rng.expovariate(rate))
    samples = list(await asyncio.gather(*tasks))
    bar.close()
    return samples


async def batch_stats(client: httpx.AsyncClient) -> dict[str, Any] | None:
    """This server's model counters, or None for servers without ``/v1/stats``."""
    try:
        response = await client.get("/v1/stats")
    except httpx.HTTPError:
        return None
    return response.json() if response.status_code == 200 else None


def batch_summary(before: dict[str, Any] | None, after: dict[str, Any] | None) -> dict[str, Any]:
    if before is None or after is None:
        return {}
    hist: dict[int, int] = {}
    for model, stats in after["models"].items():
        if not isinstance(stats, dict):  # "on_demand": a model asleep, not asked
            continue
        old = before["models"].get(model, {})
        old = old.get("batch_size_histogram", {}) if isinstance(old, dict) else {}
        for size, count in histogram_delta(old, stats["batch_size_histogram"]).items():
            hist[size] = hist.get(size, 0) + count
    return {"batch_size_histogram": hist, "mean_batch_images": mean_batch(hist)}


async def sweep(url: str, args: argparse.Namespace, workload: Workload) -> list[dict[str, Any]]:
    """Every level in order; one result row per level: config, stats, raw samples."""
    levels: list[tuple[str, float]] = [("concurrency", c) for c in args.concurrency]
    levels += [("rate", r) for r in args.rate]
    limits = httpx.Limits(max_connections=None, max_keepalive_connections=64)
    rows = []
    async with httpx.AsyncClient(base_url=url, timeout=args.timeout, limits=limits) as client:
        for mode, value in levels:
            before = await batch_stats(client)
            if mode == "concurrency":
                samples = await closed_loop(
                    client, workload, int(value), args.requests, args.duration, args.warmup
                )
            else:
                samples = await open_loop(
                    client, workload, value, args.requests, args.duration, args.warmup
                )
            after = await batch_stats(client)
            stats = {**summarize(samples), **batch_summary(before, after)}
            rows.append(
                {"mode": mode, "value": value, "stats": stats, "raw": [vars(s) for s in samples]}
            )
    return rows


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--workload", type=Path, default=Path("benchmarks/workloads/default.json"))
    parser.add_argument("--concurrency", type=_ints, default=[1, 2, 4, 8, 16])
    parser.add_argument("--rate", type=_floats, default=[], help="open-loop rates, req/s")
    parser.add_argument("--requests", type=int, default=64, help="measured requests per level")
    parser.add_argument("--duration", type=float, default=120.0, help="seconds per level, at most")
    parser.add_argument("--warmup", type=int, default=4, help="unmeasured requests per level")
    parser.add_argument("--timeout", type=float, default=600.0)


def _ints(text: str) -> list[int]:
    return [int(x) for x in text.split(",") if x]


def _floats(text: str) -> list[float]:
    return [float(x) for x in text.split(",") if x]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--url", default="http://127.0.0.1:8000")
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/loadgen"))
    add_arguments(parser)
    args = parser.parse_args()
    workload = Workload.load(args.workload)
    rows = asyncio.run(sweep(args.url, args, workload))
    config = {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()}
    write_report(args.out, config, {"server": rows}, baseline=None)
    print(json.dumps([{"level": r["value"], **r["stats"]} for r in rows], indent=1))


if __name__ == "__main__":
    main()
