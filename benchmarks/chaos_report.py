"""The chaos soak's figures: counts by status, latencies, lost jobs, hangs, memory.

Pure functions over what :mod:`benchmarks.chaos_workload` recorded, plus
:func:`ray_process_memory`, which reads the RSS of every process of this run's
Ray cluster (all of them are descendants of the driver: ``Cluster`` starts each
node's GCS and raylet, and the raylets start the workers).
"""

from __future__ import annotations

import os
from collections import Counter
from dataclasses import asdict
from typing import Any

from benchmarks.chaos_workload import JobFate, Outcome
from benchmarks.stats import percentile


def ray_process_memory(temp_dir: str) -> list[dict[str, Any]]:
    """pid, name and RSS (MiB) of every live process of the cluster: those below this
    one, and those naming its ``temp_dir`` (raylets) with theirs (moto_server aside)."""
    import psutil

    roots = [psutil.Process(os.getpid())]
    for process in psutil.process_iter(["cmdline"]):
        if any(temp_dir in part for part in process.info["cmdline"] or ()):
            roots.append(process)
    members = {p.pid: p for root in roots for p in [root, *_descendants(root)]}
    members.pop(os.getpid())
    found = []
    for process in members.values():
        try:
            cmdline = process.cmdline()
            rss = process.memory_info().rss
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            continue
        name = _process_name(cmdline, process.name())
        if "moto_server" in name:
            continue
        found.append({"pid": process.pid, "name": name, "rss_mib": round(rss / 2**20, 1)})
    return sorted(found, key=lambda p: -p["rss_mib"])


def _descendants(process: Any) -> list[Any]:
    import psutil

    try:
        return process.children(recursive=True)
    except psutil.NoSuchProcess:
        return []


def _process_name(cmdline: list[str], fallback: str) -> str:
    if not cmdline:
        return fallback
    if cmdline[0].startswith("ray::"):  # a worker: setproctitle names its actor
        return cmdline[0].split()[0]
    parts = [os.path.basename(cmdline[0])]
    script = next((c for c in cmdline[1:3] if c.endswith(".py")), None)
    if script is not None:
        parts.append(os.path.basename(script))
    return " ".join(parts)


def ms(values: list[float], q: float) -> float | None:
    return round(percentile(values, q) * 1000, 1) if values else None


def is_success(outcome: Outcome) -> bool:
    return outcome.status in ("200", "202")


def summarise(outcomes: list[Outcome], fates: list[JobFate], deadline_s: float) -> dict[str, Any]:
    """The headline figures and their breakdown by request kind."""
    by_kind: dict[str, dict[str, Any]] = {}
    for kind in sorted({o.kind for o in outcomes}):
        mine = [o for o in outcomes if o.kind == kind]
        ok = [o.latency_s for o in mine if is_success(o)]
        by_kind[kind] = {
            "sent": len(mine),
            "by_status": dict(Counter(o.status for o in mine).most_common()),
            "p50_ms": ms(ok, 50),
            "p99_ms": ms(ok, 99),
        }
    sync_ok = [o.latency_s for o in outcomes if o.status == "200"]
    done_jobs = [f.latency_s for f in fates if f.status == "succeeded"]
    lost = [f for f in fates if f.status != "succeeded"]
    refused = [o for o in outcomes if o.status in ("429", "503")]
    return {
        "requests": len(outcomes),
        "by_status": dict(Counter(o.status for o in outcomes).most_common()),
        "sync_success_p50_ms": ms(sync_ok, 50),
        "sync_success_p99_ms": ms(sync_ok, 99),
        "jobs_accepted": len(fates),
        "jobs_by_status": dict(Counter(f.status for f in fates).most_common()),
        "jobs_by_attempt": dict(sorted(Counter(str(f.attempt) for f in fates).items())),
        "job_success_p50_s": _seconds(done_jobs, 50),
        "job_success_p99_s": _seconds(done_jobs, 99),
        "jobs_lost": len(lost),
        "lost_jobs": [asdict(f) for f in lost],
        "hangs": sum(1 for o in outcomes if o.status == "hang"),
        "deadline_s": deadline_s,
        "refusals_without_retry_after": sum(1 for o in refused if o.retry_after is None),
        "by_kind": by_kind,
    }


def _seconds(values: list[float], q: float) -> float | None:
    return round(percentile(values, q), 1) if values else None


def fault_effects(
    faults: list[dict[str, Any]], outcomes: list[Outcome], window_s: float
) -> list[dict[str, Any]]:
    """Each fault with the answers other than a success of the requests in flight at
    it or sent within ``window_s`` after it (a request is counted for one fault only)."""
    effects = []
    claimed: set[int] = set()  # a request counts for the first fault that it meets
    for fault in faults:
        at = fault["at_s"]
        hit = Counter()
        for index, o in enumerate(outcomes):
            in_flight = o.sent_at_s <= at <= o.sent_at_s + o.latency_s
            after = at < o.sent_at_s <= at + window_s
            if index not in claimed and (in_flight or after) and not is_success(o):
                claimed.add(index)
                hit[o.status] += 1
        effects.append({**fault, "failed_answers": dict(hit)})
    return effects


def markdown(doc: dict[str, Any]) -> str:
    s, c = doc["summary"], doc["config"]
    lines = [
        "# Chaos soak",
        "",
        f"Command: `{c['command']}`",
        "",
        f"{c['date']}, {c['machine']}; load before `{c['uptime_before']}`, "
        f"after `{c['uptime_after']}` (a shared machine).",
        "",
        "| figure | value |",
        "|---|---|",
        f"| requests | {s['requests']} in {doc['elapsed_s']:.0f} s |",
        f"| answers by status | {_counts(s['by_status'])} |",
        f"| sync successes p50 / p99 | {s['sync_success_p50_ms']} / "
        f"{s['sync_success_p99_ms']} ms |",
        f"| async jobs accepted | {s['jobs_accepted']}: {_counts(s['jobs_by_status'])} |",
        f"| jobs by attempt | {_counts(s['jobs_by_attempt'])} |",
        f"| job p50 / p99 (submit to succeeded) | {s['job_success_p50_s']} / "
        f"{s['job_success_p99_s']} s |",
        f"| **jobs lost** (target 0) | **{s['jobs_lost']}** |",
        f"| **hangs** (no answer in {s['deadline_s']:.0f} s; target 0) | **{s['hangs']}** |",
        f"| 429/503 without Retry-After | {s['refusals_without_retry_after']} |",
        "",
        "## Faults",
        "",
        "| at (s from start) | fault | target | back after | failed answers near it |",
        "|---|---|---|---|---|",
    ]
    for f in doc["faults"]:
        target = f.get("name", f.get("node", f.get("error", "")))
        back = f.get("replaced_after_s")
        replaced = "-" if back is None else f"{back:.0f} s"
        lines.append(
            f"| {f['at_s']:.0f} | {f['fault']} | `{target}` on {f.get('node', '?')} | "
            f"{replaced} | {_counts(f['failed_answers']) or 'none'} |"
        )
    lines += ["", "## By request kind", "", "| kind | sent | by status | p50 ms | p99 ms |",
              "|---|---|---|---|---|"]  # fmt: skip
    for kind, k in s["by_kind"].items():
        lines.append(
            f"| {kind} | {k['sent']} | {_counts(k['by_status'])} | {k['p50_ms']} | {k['p99_ms']} |"
        )
    lines += ["", "## Memory of the surviving Ray processes (RSS at the end)", "",
              "| process | pid | RSS MiB |", "|---|---|---|"]  # fmt: skip
    for p in doc["memory"]:
        lines.append(f"| `{p['name']}` | {p['pid']} | {p['rss_mib']} |")
    total = sum(p["rss_mib"] for p in doc["memory"])
    lines += [f"| **total** | | **{total:.0f}** |", ""]
    return "\n".join(lines)


def _counts(counts: dict[str, int]) -> str:
    return ", ".join(f"{k} × {v}" for k, v in counts.items())
