"""Benchmark output: JSON ``{config, stats, raw}``, a markdown table, a PNG plot."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

COLUMNS = [
    ("images_per_s", "images/s"),
    ("p50_latency_ms", "p50 ms"),
    ("p90_latency_ms", "p90 ms"),
    ("p99_latency_ms", "p99 ms"),
    ("ttfb_ms", "ttfb ms"),
    ("mean_batch_images", "mean batch"),
    ("errors", "errors"),
]


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return "—" if math.isnan(value) else f"{value:.2f}"
    return str(value)


def markdown(runs: dict[str, list[dict[str, Any]]]) -> str:
    lines = [
        "| run | level | " + " | ".join(title for _, title in COLUMNS) + " | batch sizes |",
        "|---|---|" + "---|" * (len(COLUMNS) + 1),
    ]
    for name, rows in runs.items():
        for row in rows:
            stats = row["stats"]
            level = f"{'c' if row['mode'] == 'concurrency' else 'rate'}={row['value']:g}"
            cells = [_fmt(stats.get(key, math.nan)) for key, _ in COLUMNS]
            hist = stats.get("batch_size_histogram", {})
            sizes = ", ".join(f"{k}×{v}" for k, v in hist.items()) or "—"
            lines.append(f"| {name} | {level} | " + " | ".join(cells) + f" | {sizes} |")
    return "\n".join(lines) + "\n"


def plot(path: Path, runs: dict[str, list[dict[str, Any]]], baseline: float | None) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4.2))
    for name, rows in runs.items():
        closed = [r for r in rows if r["mode"] == "concurrency"]
        if not closed:
            continue
        levels = [r["value"] for r in closed]
        left.plot(levels, [r["stats"].get("images_per_s") for r in closed], marker="o", label=name)
        right.plot(
            levels, [r["stats"].get("p50_latency_ms") for r in closed], marker="o", label=name
        )
    if baseline is not None:
        left.axhline(baseline, color="gray", linestyle="--", label="raw pipeline best")
    left.set(xlabel="concurrency", ylabel="images/s", title="Throughput")
    right.set(xlabel="concurrency", ylabel="p50 latency (ms)", title="Latency")
    levels = sorted(
        {r["value"] for rows in runs.values() for r in rows if r["mode"] == "concurrency"}
    )
    for axis in (left, right):
        axis.set_xscale("log", base=2)
        axis.set_xticks(levels, [f"{v:g}" for v in levels])
        axis.set_ylim(bottom=0)
        axis.grid(True, alpha=0.3)
        axis.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def write_report(
    out: Path,
    config: dict[str, Any],
    runs: dict[str, list[dict[str, Any]]],
    baseline: float | None,
    extra: dict[str, Any] | None = None,
) -> None:
    """Write ``out.json``, ``out.md`` and ``out.png``."""
    out.parent.mkdir(parents=True, exist_ok=True)
    stats = {
        name: [{"mode": r["mode"], "value": r["value"], **r["stats"]} for r in rows]
        for name, rows in runs.items()
    }
    doc = {"config": config, "stats": {**stats, **(extra or {})}, "raw": runs}
    out.with_suffix(".json").write_text(json.dumps(doc, indent=1, default=str))
    out.with_suffix(".md").write_text(markdown(runs))
    plot(out.with_suffix(".png"), runs, baseline)
