"""Raw pipeline, LitServe and this server on the same weights, interleaved in rounds.

``python -m benchmarks.run --compare`` (or ``python -m benchmarks.compare``). Each
round measures, in an order that rotates from round to round so none of the three
always runs first on a warm or a cold machine:

- **raw**: the family's diffusers pipeline in-process at ``--batch-sizes`` (the ceiling);
- **litserve**: ``benchmarks/peers/litserve_server.py`` in its own process (batching at
  max 8 and a 0.1 s wait), closed loop at each ``--concurrency``;
- **ours**: this app in a private Ray instance (``benchmarks/server.py``), same loop.

The raw pipeline and LitServe run torch on ``--peer-threads`` threads (every core by
default: their best when nothing else runs); ours keeps its config's thread rule
(``torch_threads``, else the model replica's ``num_cpus``), since its proxy, ingress
and encoder share the same cores.

All three run the first model of ``--config`` at ``--size`` (generated at exactly that
size: ``generation_scale`` 1), ``--steps`` steps, and both servers answer a base64 PNG
made by the same encoder function. Each server is started for its phase and stopped
after it (the peer by its process group, ours by ``ray.shutdown()`` of its own temp
dir; never ``ray stop``), so nothing idles beside another phase. Every round records
the load average first: on a shared machine, read the ratios with it.

    python -m benchmarks.run --compare --rounds 3 --out benchmarks/results/compare-tiny
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import json
import os
import platform
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx

from benchmarks import raw_pipeline
from benchmarks.loadgen import sweep
from benchmarks.server import ROOT, model_config, started_server
from benchmarks.workload import Workload

PHASES = ("raw", "litserve", "ours")


def workload(size: str, steps: int) -> Workload:
    body = {
        "prompt": "a lighthouse on a cliff",
        "size": size,
        "n": 1,
        "output_format": "png",
        "response_format": "b64_json",
        "num_inference_steps": steps,
    }
    return Workload([body], [1.0], name=f"png-{size}-{steps}steps")


@contextlib.contextmanager
def litserve_peer(args: argparse.Namespace, port: int) -> Iterator[str]:
    """The peer in its own process group; stopped with SIGTERM, then SIGKILL, by that id."""
    command = [sys.executable, "-m", "benchmarks.peers.litserve_server", "--port", str(port)]
    command += ["--config", str(args.config), "--size", args.size]
    command += ["--threads", str(args.peer_threads)]
    log_path = Path(tempfile.gettempdir()) / f"compare-litserve-{os.getpid()}.log"
    log = open(log_path, "a")  # noqa: SIM115 - closed below
    proc = subprocess.Popen(command, stdout=log, stderr=log, start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + args.start_timeout
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"LitServe exited with {proc.returncode}; see {log.name}")
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(url + "/health", timeout=2).status_code == 200:
                    break
            if time.monotonic() > deadline:
                raise RuntimeError(f"LitServe not healthy after {args.start_timeout} s")
            time.sleep(1)
        yield url
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        log.close()


def served(url: str, args: argparse.Namespace) -> dict[str, dict[str, Any]]:
    """Each concurrency level's summary (the samples stay out of the report)."""
    loop_args = argparse.Namespace(
        concurrency=args.concurrency,
        rate=[],
        requests=args.requests,
        duration=args.duration,
        warmup=args.warmup,
        timeout=600.0,
    )
    rows = asyncio.run(sweep(url, loop_args, workload(args.size, args.steps)))
    return {f"c{int(row['value'])}": row["stats"] for row in rows}


def run_phase(phase: str, args: argparse.Namespace, model: dict[str, Any]) -> Any:
    width, height = (int(x) for x in args.size.split("x"))
    if phase == "raw":
        body = {"num_inference_steps": args.steps, "prompt": "a lighthouse on a cliff"}
        peer_model = {**model, "torch_threads": args.peer_threads}
        return raw_pipeline.measure(peer_model, body, args.batch_sizes, size=(width, height))
    if phase == "litserve":
        with litserve_peer(args, args.port + 1) as url:
            return served(url, args)
    with started_server(args.port, args.config, generation_scale=1.0) as url:
        return served(url, args)


def ratios(entry: dict[str, Any]) -> dict[str, float]:
    raw, lit, ours = entry["raw"], entry["litserve"], entry["ours"]
    raw_best = max(r["images_per_s"] for r in raw)
    raw_single_ms = next(r["latency_ms"] for r in raw if r["batch_size"] == 1)
    top = f"c{max(entry['concurrency'])}"
    return {
        "raw_best_images_per_s": raw_best,
        "raw_single_ms": raw_single_ms,
        f"ours_over_raw_best_{top}": ours[top]["images_per_s"] / raw_best,
        f"litserve_over_raw_best_{top}": lit[top]["images_per_s"] / raw_best,
        f"ours_over_litserve_{top}": ours[top]["images_per_s"] / lit[top]["images_per_s"],
        "ours_c1_p50_over_raw_single": ours["c1"]["p50_latency_ms"] / raw_single_ms,
        "litserve_c1_p50_over_raw_single": lit["c1"]["p50_latency_ms"] / raw_single_ms,
    }


TARGETS = {
    "ours_over_raw_best_c8": (">=", 0.90),
    "ours_over_litserve_c8": (">=", 1.05),
    "ours_c1_p50_over_raw_single": ("<=", 1.10),
}


def markdown(result: dict[str, Any]) -> str:
    rounds, medians = result["rounds"], result["medians"]
    lines = [
        f"# Raw vs LitServe vs ours ({result['config']['date']})",
        "",
        f"`{result['config']['command']}`",
        "",
        f"{result['config']['machine']}; {result['config']['size']}, "
        f"{result['config']['steps']} steps, PNG b64 responses. Shared machine: the load "
        "average (1 min) before each round is in the table.",
        "",
        "| round | order | load before | raw best img/s | raw bs1 ms | LitServe c8 img/s | "
        "ours c8 img/s | ours ÷ raw (c8) | LitServe ÷ raw | ours ÷ LitServe | "
        "c1 p50 raw / LitServe / ours ms |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for i, entry in enumerate(rounds, 1):
        r, lit, ours = entry["ratios"], entry["litserve"], entry["ours"]
        lines.append(
            f"| {i} | {' → '.join(entry['order'])} | {entry['loadavg_before'][0]:.1f} | "
            f"{r['raw_best_images_per_s']:.2f} | {r['raw_single_ms']:.0f} | "
            f"{lit['c8']['images_per_s']:.2f} | {ours['c8']['images_per_s']:.2f} | "
            f"{r['ours_over_raw_best_c8']:.2f} | {r['litserve_over_raw_best_c8']:.2f} | "
            f"{r['ours_over_litserve_c8']:.2f} | {r['raw_single_ms']:.0f} / "
            f"{lit['c1']['p50_latency_ms']:.0f} / {ours['c1']['p50_latency_ms']:.0f} |"
        )
    lines += ["", "| median of rounds | value | target | met |", "|---|---|---|---|"]
    for name, (op, bound) in TARGETS.items():
        value = medians[name]
        met = value >= bound if op == ">=" else value <= bound
        lines.append(f"| {name} | {value:.3f} | {op} {bound} | {'met' if met else 'missed'} |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--config", type=Path, default=ROOT / "serve_config.yaml")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--size", default="64x64", help="generated and returned size")
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--batch-sizes", type=_ints, default=[1, 8], help="raw pipeline")
    parser.add_argument("--concurrency", type=_ints, default=[8, 1])
    parser.add_argument("--requests", type=int, default=48, help="measured per level")
    parser.add_argument("--duration", type=float, default=30.0, help="seconds per level, max")
    parser.add_argument("--warmup", type=int, default=8, help="unmeasured per level")
    parser.add_argument("--start-timeout", type=float, default=180.0)
    parser.add_argument("--port", type=int, default=8770)
    parser.add_argument(
        "--peer-threads",
        type=int,
        default=os.cpu_count() or 1,
        help="torch threads of the raw pipeline and LitServe (default: every core, their "
        "best on an otherwise idle machine); ours runs its config's thread rule",
    )
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/compare-tiny"))
    args = parser.parse_args(argv)
    if 1 not in args.concurrency or 8 not in args.concurrency:
        parser.error("--concurrency must include 1 and 8 (the targets read them)")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    model = {**model_config(args.config), "generation_scale": 1.0}
    config = {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()}
    config["command"] = "python -m benchmarks.run --compare " + " ".join(argv or sys.argv[1:])
    config["machine"] = f"{platform.machine()} {os.cpu_count()} cpus, {platform.python_version()}"
    rounds: list[dict[str, Any]] = []
    for index in range(args.rounds):
        order = PHASES[index % 3 :] + PHASES[: index % 3]
        entry: dict[str, Any] = {
            "order": list(order),
            "loadavg_before": list(os.getloadavg()),
            "uptime": subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip(),
            "concurrency": args.concurrency,
        }
        for phase in order:
            gc.collect()
            entry[f"loadavg_before_{phase}"] = os.getloadavg()[0]
            entry[phase] = run_phase(phase, args, model)
        entry["ratios"] = ratios(entry)
        print(json.dumps({"round": index + 1, **entry["ratios"], "uptime": entry["uptime"]}))
        rounds.append(entry)
        write(args.out, config, rounds)  # after every round: a cut-short run keeps its rounds
    print(write(args.out, config, rounds))


def write(out: Path, config: dict[str, Any], rounds: list[dict[str, Any]]) -> str:
    """``out.json`` and ``out.md`` from the rounds so far; returns the Markdown."""
    keys = rounds[0]["ratios"].keys()
    medians = {k: statistics.median(r["ratios"][k] for r in rounds) for k in keys}
    config = {**config, "date": datetime.now(UTC).isoformat(timespec="seconds")}
    result = {"config": config, "rounds": rounds, "medians": medians}
    out.with_suffix(".json").write_text(json.dumps(result, indent=1))
    table = markdown(result)
    out.with_suffix(".md").write_text(table)
    return table


def _ints(text: str) -> list[int]:
    return [int(x) for x in text.split(",") if x]


if __name__ == "__main__":
    main()
