"""Per-class scheduling counters for ``GET /v1/stats`` and Prometheus.

The step loop records here when a request is first admitted (queue wait), when it
gets its images (end-to-end latency inside the replica), when it is paused or
resumed, and when it is refused for its deadline. ``snapshot`` is what ``stats()``
reports under ``"priority"``; the same observations go to the replica's Prometheus
metrics (``deployments/metrics.py``) tagged with the class.
"""

from __future__ import annotations

import bisect
from dataclasses import dataclass, field
from typing import Any

from common.job import PRIORITIES
from deployments.metrics import MS_BUCKETS, ModelMetrics


@dataclass
class MsHistogram:
    """Counts per upper bound in ms (Prometheus' buckets, not cumulative), plus a total."""

    bounds: tuple[float, ...] = tuple(MS_BUCKETS)
    counts: list[int] = field(default_factory=lambda: [0] * (len(MS_BUCKETS) + 1))
    count: int = 0
    sum_ms: float = 0.0
    max_ms: float = 0.0

    def observe(self, ms: float) -> None:
        self.counts[bisect.bisect_left(self.bounds, ms)] += 1
        self.count += 1
        self.sum_ms += ms
        self.max_ms = max(self.max_ms, ms)

    def snapshot(self) -> dict[str, Any]:
        labels = [f"le_{bound:g}" for bound in self.bounds] + ["le_inf"]
        return {
            "count": self.count,
            "mean_ms": round(self.sum_ms / self.count, 1) if self.count else None,
            "max_ms": round(self.max_ms, 1),
            "buckets_ms": dict(zip(labels, self.counts, strict=True)),
        }


@dataclass
class ClassStats:
    """The scheduler's per-class view; every method runs on the pipeline thread."""

    metrics: ModelMetrics
    queue_wait: dict[str, MsHistogram] = field(
        default_factory=lambda: {name: MsHistogram() for name in PRIORITIES}
    )
    latency: dict[str, MsHistogram] = field(
        default_factory=lambda: {name: MsHistogram() for name in PRIORITIES}
    )
    preemptions: int = 0
    resumes: int = 0
    paused_rows: int = 0
    deadline_refusals: int = 0

    def admitted(self, priority: str, waited_ms: float) -> None:
        self.queue_wait[priority].observe(waited_ms)
        self.metrics.class_queue_wait_ms.observe(waited_ms, tags={"priority": priority})

    def finished(self, priority: str, latency_ms: float) -> None:
        self.latency[priority].observe(latency_ms)
        self.metrics.class_latency_ms.observe(latency_ms, tags={"priority": priority})

    def paused(self, rows: int) -> None:
        self.preemptions += 1
        self.paused_rows += rows
        self.metrics.preemptions.inc()
        self.metrics.paused_rows.set(self.paused_rows)

    def resumed(self, rows: int) -> None:
        self.resumes += 1
        self.paused_rows -= rows
        self.metrics.paused_rows.set(self.paused_rows)

    def refused_for_deadline(self) -> None:
        self.deadline_refusals += 1
        self.metrics.deadline_refusals.inc()

    def snapshot(self) -> dict[str, Any]:
        return {
            "queue_wait_ms": {name: h.snapshot() for name, h in self.queue_wait.items()},
            "latency_ms": {name: h.snapshot() for name, h in self.latency.items()},
            "preemptions": self.preemptions,
            "resumes": self.resumes,
            "paused_rows": self.paused_rows,
            "deadline_refusals": self.deadline_refusals,
        }
