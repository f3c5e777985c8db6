"""Figures of one ``benchmarks.priority`` condition, and the run's markdown report."""

from __future__ import annotations

import argparse
import statistics
from collections.abc import Sequence
from typing import Any, Protocol

from benchmarks.stats import percentile
from common.sizes import latent_pixels

P99_TARGET = 1.5  # interactive p99 at most 1.5x the baseline
THROUGHPUT_TARGET = 0.95  # priority's images/s at least 0.95x FCFS's


class SentRecord(Protocol):
    sub: Any
    kind: str
    sent: float
    done: float | None
    failed: bool


def summarize(
    condition: str,
    sent: Sequence[SentRecord],
    start: float,
    end: float,
    snapshot: dict[str, Any],
    args: argparse.Namespace,
) -> dict[str, Any]:
    """Interactive latency, throughput within the window, batch completion and waits."""
    window = end - start
    finished = [r for r in sent if r.done is not None and not r.failed and r.done <= end]
    interactive = [r.done - r.sent for r in finished if r.kind == "interactive"]
    batch = [r for r in finished if r.kind == "batch"]
    images = sum(r.sub.n for r in finished)
    work = sum(
        r.sub.n * latent_pixels(r.sub.job.gen_width, r.sub.job.gen_height) * r.sub.job.steps
        for r in finished
    )
    waits = [r.sub.idle_s for r in batch]
    return {
        "condition": condition,
        "window_s": round(window, 2),
        "interactive_sent": sum(r.kind == "interactive" for r in sent),
        "interactive_done": len(interactive),
        "interactive_failed": sum(r.kind == "interactive" and r.failed for r in sent),
        "interactive_p50_s": round(percentile(interactive, 50), 3),
        "interactive_p99_s": round(percentile(interactive, 99), 3),
        "images_per_s": round(images / window, 3),
        "work_px_steps_per_s": round(work / window, 1),
        "batch_done": len(batch),
        "batch_p50_s": round(percentile([r.done - r.sent for r in batch], 50), 2),
        "batch_p99_s": round(percentile([r.done - r.sent for r in batch], 99), 2),
        "batch_max_wait_s": round(max(waits), 2) if waits else None,
        "max_batch_wait_s": args.max_batch_wait,
        "preemptions": snapshot["priority"]["preemptions"],
        "per_step_ms": snapshot["per_step_ms"],
    }


def _median(rounds: list[dict[str, Any]], condition: str, key: str) -> float:
    values = [r[key] for r in rounds if r["condition"] == condition and r[key] is not None]
    return statistics.median(values) if values else float("nan")


def _verdict(ok: bool) -> str:
    return "met" if ok else "MISSED"


def markdown(report: dict[str, Any]) -> str:
    rounds = report["rounds"]
    keys = (
        "interactive_p50_s",
        "interactive_p99_s",
        "images_per_s",
        "work_px_steps_per_s",
        "batch_p50_s",
        "batch_p99_s",
        "batch_max_wait_s",
        "preemptions",
    )
    lines = [
        "# Priority scheduling: FCFS against priority (benchmarks/priority.py)",
        "",
        f"Command: `{report['command']}`",
        "",
        f"Machine: {report['machine']}; load average at the end "
        f"{[round(x, 1) for x in report['load_average_at_end']]}.",
        f"Capacity: {report['capacity_interactive_per_s']:.2f} interactive requests/s "
        f"(a backlog of them alone); the stream: {report['interactive_rate_per_s']:.2f}/s.",
        "",
        "Medians over rounds:",
        "",
        "| condition | " + " | ".join(keys) + " |",
        "|---" * (len(keys) + 1) + "|",
    ]
    for condition in ("idle", "occupied", "fcfs", "priority"):
        cells = [f"{_median(rounds, condition, key):g}" for key in keys]
        lines.append(f"| {condition} | " + " | ".join(cells) + " |")
    p99 = _median(rounds, "priority", "interactive_p99_s")
    idle = _median(rounds, "idle", "interactive_p99_s")
    occupied = _median(rounds, "occupied", "interactive_p99_s")
    fcfs_p99 = _median(rounds, "fcfs", "interactive_p99_s")
    ratio = _median(rounds, "priority", "images_per_s") / _median(rounds, "fcfs", "images_per_s")
    wait = _median(rounds, "priority", "batch_max_wait_s")
    bound = report["args"]["max_batch_wait"]
    lines += [
        "",
        "| target | figure | verdict |",
        "|---|---|---|",
        f"| interactive p99 <= 1.5x idle (the GPU target) | {p99 / idle:.2f}x "
        f"({p99:.2f} s vs {idle:.2f} s) | {_verdict(p99 / idle <= P99_TARGET)} |",
        f"| interactive p99 <= 1.5x alone at the same occupancy (the CPU target) | "
        f"{p99 / occupied:.2f}x ({p99:.2f} s vs {occupied:.2f} s) | "
        f"{_verdict(p99 / occupied <= P99_TARGET)} |",
        f"| images/s vs FCFS >= 0.95 | {ratio:.3f} | {_verdict(ratio >= THROUGHPUT_TARGET)} |",
        f"| batch wait (queued + paused) within max_batch_wait_s + one step-out | "
        f"max {wait:.1f} s, bound {bound:g} s | see rounds |",
        "",
        f"FCFS interactive p99 for comparison: {fcfs_p99:.2f} s "
        f"({fcfs_p99 / max(p99, 1e-9):.1f}x priority's).",
    ]
    return "\n".join(lines) + "\n"
