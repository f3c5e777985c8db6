"""LoRA adapters under load: images/s with none, one for all, and 4 distinct interleaved.

Two modes, each running the three workloads in one invocation, interleaved in rounds
whose order rotates, so whatever else loads the machine hits all three alike; warm-up
excluded:

- ``http``: the app (``benchmarks/server.py``, one replica per deployment) under a
  closed loop of ``--concurrency`` Together requests. Also the first-use load latency
  of a never-seen adapter: the replica's own load time (``/v1/stats``) and the first
  request's latency against the next one's.
- ``engine``: the real ``DiffusersEngine`` in-process, one batch of ``--concurrency``
  one-image jobs at a time (what a replica runs when c requests queue), so the
  per-row LoRA cost is measured without HTTP and Ray in the way. ``--path step`` (the
  default, as ``batching.mode: step``) drives the step scheduler's ``StepRunner``
  (admit, one tick per step, decode); ``--path pipeline`` is request mode's single
  ``engine.generate`` call. First-use load is ``LoraBank.ensure`` of a fresh copy.

    python -m benchmarks.lora_mix --mode engine --concurrency 8 --rounds 6 \\
        --out benchmarks/results/lora_mix_engine
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
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
        loras = [{"path": getattr(args, "demos", DEMOS)[0], "scale": 1.0}]
    elif mode == "four":
        loras = [{"path": getattr(args, "demos", DEMOS)[index % 4], "scale": 1.0}]
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
    return summarize(args, raw, load, stats)


def run_engine(args: argparse.Namespace) -> dict[str, Any]:
    import tempfile

    from common.job import GenerationJob, LoraRef
    from common.model_config import ModelConfig
    from deployments.model.families.registry import load_family
    from deployments.model.lora.bank import bank_for
    from deployments.model.request_mode.batching import group_jobs
    from deployments.model.request_mode.engine import DiffusersEngine
    from deployments.model.scheduler.runner import StepRunner

    folder = Path(tempfile.mkdtemp(prefix="lora-bench-"))
    config = ModelConfig.model_validate(
        {
            "id": args.model,
            "source": f"builtin:{args.model}",
            "torch_threads": args.threads,
            "size_multiple": 16,
            "loras": {"dirs": [str(folder)]},
        }
    )
    engine = DiffusersEngine(config) if args.path == "pipeline" else None
    family = engine.family if engine is not None else load_family(config)
    bank = engine.loras if engine is not None else None
    bank = bank or bank_for(config, family.denoiser, family.parse_lora, family.demo_loras)
    assert bank is not None
    args.demos = family.demo_loras
    runner = StepRunner(family, bank.rows)

    def jobs(mode: str) -> list[GenerationJob]:
        out = []
        for index in range(args.concurrency):
            loras = [
                LoraRef(lo["path"], lo["scale"]) for lo in body(mode, index, args)["image_loras"]
            ]
            gen = args.size // 8 // 16 * 16
            out.append(
                GenerationJob(
                    f"{mode}-{index}",
                    "a lighthouse at dusk",
                    None,
                    (index,),
                    gen,
                    gen,
                    args.steps,
                    args.guidance,
                    loras=tuple(loras),
                )
            )
        return out

    def call(mode: str) -> float:
        batch = jobs(mode)
        for job in batch:
            bank.ensure(job.loras)
        started = time.perf_counter()
        if engine is not None:
            (group,) = group_jobs(batch)
            engine.generate(group)
        else:  # the step loop's own primitives, one tick per denoising step
            rows = [row for job in batch for row in runner.admit(job, None)]
            while not rows[0].done:
                runner.tick(rows)
            runner.decode(rows)
        return time.perf_counter() - started

    for mode in MODES:
        call(mode)  # warm-up
    raw: list[dict[str, Any]] = []
    for round_ in range(args.rounds):
        order = MODES[round_ % 3 :] + MODES[: round_ % 3]
        for mode in order:
            wall = call(mode)
            print(f"round {round_} {mode}: {wall:.2f} s", flush=True)
            raw.append(
                {
                    "round": round_,
                    "mode": mode,
                    "wall_s": wall,
                    "latencies_s": [wall] * args.concurrency,
                    "failures": 0,
                }
            )
    shutil.copy(folder / f"{args.demos[0]}.safetensors", folder / "fresh.safetensors")
    bank.registry.refresh()
    started = time.perf_counter()
    bank.ensure((LoraRef("fresh"),))
    ensure_ms = (time.perf_counter() - started) * 1000
    load = {"replica_load_ms": bank.loaded()["fresh"].load_ms, "ensure_ms": ensure_ms}
    shutil.rmtree(folder, ignore_errors=True)
    return summarize(args, raw, load, {})


def summarize(
    args: argparse.Namespace, raw: list[dict[str, Any]], load: dict[str, Any], stats: Any
) -> dict[str, Any]:
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
        "config": {
            **vars(args),
            "machine": f"{platform.machine()}, {os.cpu_count()} cpus",
            "loadavg_before": args.loadavg_before,
            "loadavg_after": round(os.getloadavg()[0], 2),
        },
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
        f"Machine: {result['config']['machine']}; load average before and after the run: "
        f"{result['config']['loadavg_before']} / {result['config']['loadavg_after']}. The",
        "three workloads run in rounds with their order rotated each round, so that other",
        "load hits all of them alike. Mixed adapters share UNet calls (per-row deltas).",
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
    lines += ["", f"First use of a never-seen adapter: load {load['replica_load_ms']:.1f} ms"]
    if "first_request_ms" in load:
        lines[-1] += (
            f"; first request {load['first_request_ms']:.0f} ms vs "
            f"{load['second_request_ms']:.0f} ms for the next one (adapter loaded)."
        )
    else:
        lines[-1] += f" (parse + checks + to device; LoraBank.ensure {load['ensure_ms']:.1f} ms)."
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--mode", choices=["http", "engine"], default="http")
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--threads", type=int, default=2, help="engine: torch threads")
    parser.add_argument(
        "--model",
        default="tiny-sdxl",
        choices=["tiny-sdxl", "tiny-flux", "tiny-qwen-image"],
        help="engine: which built-in family",
    )
    parser.add_argument("--guidance", type=float, default=5.0, help="engine: guidance")
    parser.add_argument(
        "--path", choices=["step", "pipeline"], default="step", help="engine: which loop"
    )
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--requests", type=int, default=24, help="per workload per round")
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--size", type=int, default=512, help="output side (generated at 1/8)")
    parser.add_argument("--port", type=int, default=8123)
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/lora_mix"))
    args = parser.parse_args()
    args.loadavg_before = round(os.getloadavg()[0], 2)
    command = "python -m benchmarks.lora_mix " + " ".join(
        f"--{k} {v}"
        for k, v in vars(args).items()
        if k not in ("port", "loadavg_before")
        and not (args.mode == "http" and k in ("threads", "path", "model", "guidance"))
    )
    if args.mode == "engine":
        result = run_engine(args)
    else:
        with started_server(args.port) as url:
            result = asyncio.run(run(url, args))
    result["config"]["out"] = str(args.out)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.with_suffix(".json").write_text(json.dumps(result, indent=1, default=str))
    args.out.with_suffix(".md").write_text(markdown(result, command))
    print(markdown(result, command))


if __name__ == "__main__":
    main()
