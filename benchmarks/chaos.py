"""Chaos soak: mixed traffic on a 3-node cluster while replicas are killed and a node goes.

Not a timed test. It starts its own cluster (:mod:`benchmarks.chaos_cluster`: a head
and two workers from ``ray.cluster_utils.Cluster``, moto_server as S3), sends
``--requests`` requests drawn from :mod:`benchmarks.chaos_workload` (sync, streamed,
async jobs, edits, LoRA, over the OpenAI, Together, imagine and A1111 routes) from
``--concurrency`` clients, and meanwhile, at fixed fractions of the requests sent:

- kills one ingress replica, then one encoder replica, then the model replica on
  worker B (``ray.kill``; Serve replaces each), and
- removes worker A (no drain), with the other model replica on it.

Then it follows every accepted job to its end and reports counts by status, the p50
and p99 latency of what succeeded, jobs lost (target 0), hangs (target 0) and the
RSS of every surviving Ray process (:mod:`benchmarks.chaos_report`).

    python -m benchmarks.chaos --requests 1000 --out benchmarks/results/chaos
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import shlex
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from benchmarks.chaos_cluster import ROOT, ChaosCluster, chaos_cluster, free_port
from benchmarks.chaos_report import fault_effects, markdown, ray_process_memory, summarise
from benchmarks.chaos_workload import Traffic, follow_jobs

# (fraction of the requests sent, fault): each deployment's replica once, then a node.
SCHEDULE = (
    (0.15, "kill Ingress"),
    (0.35, "kill Encoder"),
    (0.55, "kill Model:tiny-sdxl on worker_b"),
    (0.75, "remove worker_a"),
)
REPLACE_WAIT_S = 180.0
# A failed answer is put down to a fault if its request was in flight at the fault or
# sent up to this long after it.
FAULT_WINDOW_S = 15.0


async def inject_faults(cluster: ChaosCluster, traffic: Traffic) -> None:
    """Run :data:`SCHEDULE` as the traffic passes each fraction."""
    for fraction, fault in SCHEDULE:
        while traffic.sent < fraction * traffic.total:
            await asyncio.sleep(0.2)
        verb, target, *rest = fault.split()
        if verb == "remove":
            record = await asyncio.to_thread(cluster.remove_worker, target)
            print(f"[chaos] {fault} after {traffic.sent} requests: {record}", flush=True)
            continue
        on_node = rest[1] if rest else None
        record = await asyncio.to_thread(cluster.kill_replica, target, on_node)
        print(f"[chaos] {fault} after {traffic.sent} requests: {record}", flush=True)
        asyncio.ensure_future(_time_replacement(cluster, target, record))


async def _time_replacement(cluster: ChaosCluster, deployment: str, record: dict[str, Any]) -> None:
    """Note on ``record`` how long Serve took to have as many live replicas again."""
    started = time.monotonic()
    while time.monotonic() - started < REPLACE_WAIT_S:
        await asyncio.sleep(1.0)
        live = await asyncio.to_thread(cluster.replicas, deployment)
        if len(live) >= 2 and all(r["name"] != record.get("name") for r in live):
            record["replaced_after_s"] = round(time.monotonic() - started, 1)
            return


async def soak(cluster: ChaosCluster, args: argparse.Namespace) -> dict[str, Any]:
    traffic = Traffic(args.requests, args.concurrency, args.deadline_s, args.seed)
    started = time.monotonic()
    injector = asyncio.ensure_future(inject_faults(cluster, traffic))
    await traffic.run(cluster.url)
    elapsed = time.monotonic() - started
    if not injector.done():
        injector.cancel()
    fates = await follow_jobs(cluster.url, traffic.outcomes, args.job_wait_s)
    await asyncio.sleep(2.0)  # replacements still being timed get their figure
    for fault in cluster.faults:
        fault["at_s"] = round(fault["at_s"] - started, 1)
    for outcome in traffic.outcomes:
        outcome.sent_at_s -= started
    return {
        "elapsed_s": elapsed,
        "summary": summarise(traffic.outcomes, fates, args.deadline_s),
        "faults": fault_effects(cluster.faults, traffic.outcomes, FAULT_WINDOW_S),
        "non_success": [
            {
                "kind": o.kind,
                "status": o.status,
                "sent_at_s": round(o.sent_at_s, 1),
                "latency_s": round(o.latency_s, 1),
                "retry_after": o.retry_after,
            }
            for o in traffic.outcomes
            if o.status not in ("200", "202")
        ],  # fmt: skip
    }


def uptime() -> str:
    return subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--requests", type=int, default=1000)
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--request-timeout-s", type=float, default=60.0,
                        help="the app's ingress.request_timeout_s")  # fmt: skip
    parser.add_argument("--job-wait-s", type=float, default=600.0,
                        help="how long to follow the jobs after the traffic")  # fmt: skip
    parser.add_argument("--seed", type=int, default=25)
    parser.add_argument("--port", type=int, default=0, help="the proxy's port (0: a free one)")
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks/results/chaos")
    args = parser.parse_args()
    args.deadline_s = args.request_timeout_s + 30
    before = uptime()
    with chaos_cluster(args.port or free_port(), args.request_timeout_s) as cluster:
        result = asyncio.run(soak(cluster, args))
        result["memory"] = ray_process_memory(cluster.temp_dir)
    doc = {
        "config": {
            "command": "python -m benchmarks.chaos " + shlex.join(sys.argv[1:]),
            **{k: str(v) for k, v in vars(args).items()},
            "date": datetime.now(UTC).isoformat(timespec="seconds"),
            "machine": f"{platform.machine()}, {os.cpu_count()} cpus",
            "commit": subprocess.run(
                ["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True
            ).stdout.strip(),  # fmt: skip
            "uptime_before": before,
            "uptime_after": uptime(),
        },
        **result,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.with_suffix(".json").write_text(json.dumps(doc, indent=1))
    args.out.with_suffix(".md").write_text(markdown(doc))
    print(markdown(doc))


if __name__ == "__main__":
    main()
