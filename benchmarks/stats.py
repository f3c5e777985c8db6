"""Statistics over load-test samples: throughput, latency percentiles, batch sizes.

Pure functions over recorded samples, so they can be checked on synthetic data.
Keys carry their unit (``images_per_s``, ``p99_latency_ms``, ``ttfb_ms``).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass


@dataclass(frozen=True)
class Sample:
    """One request as the load generator saw it (seconds on a monotonic clock)."""

    start_s: float
    end_s: float
    ttfb_s: float
    images: int
    status: int

    @property
    def ok(self) -> bool:
        return 200 <= self.status < 300

    @property
    def latency_s(self) -> float:
        return self.end_s - self.start_s


def percentile(values: Sequence[float], q: float) -> float:
    """The q-th percentile (0-100) with linear interpolation, as numpy's default."""
    if not values:
        return math.nan
    ordered = sorted(values)
    rank = (len(ordered) - 1) * q / 100.0
    low = math.floor(rank)
    high = math.ceil(rank)
    return ordered[low] + (ordered[high] - ordered[low]) * (rank - low)


def summarize(samples: Sequence[Sample]) -> dict[str, float]:
    """Throughput over the span of the measured requests, and latency percentiles."""
    ok = [s for s in samples if s.ok]
    if not samples:
        return {"requests": 0, "errors": 0}
    span = max(s.end_s for s in samples) - min(s.start_s for s in samples)
    latencies = [s.latency_s * 1000 for s in ok]
    ttfb = [s.ttfb_s * 1000 for s in ok]
    images = sum(s.images for s in ok)
    return {
        "requests": len(samples),
        "errors": len(samples) - len(ok),
        "images": images,
        "duration_s": span,
        "images_per_s": images / span if span > 0 else math.nan,
        "requests_per_s": len(ok) / span if span > 0 else math.nan,
        "mean_latency_ms": sum(latencies) / len(latencies) if latencies else math.nan,
        "p50_latency_ms": percentile(latencies, 50),
        "p90_latency_ms": percentile(latencies, 90),
        "p99_latency_ms": percentile(latencies, 99),
        "ttfb_ms": percentile(ttfb, 50),
    }


def histogram_delta(
    before: Mapping[str | int, int], after: Mapping[str | int, int]
) -> dict[int, int]:
    """Batches formed between two snapshots of a batch-size histogram (image counts).

    Snapshots read over JSON have string keys; both forms are accepted.
    """
    old = {int(k): v for k, v in before.items()}
    new = {int(k): v for k, v in after.items()}
    delta = {k: new[k] - old.get(k, 0) for k in sorted(new)}
    return {k: v for k, v in delta.items() if v > 0}


def mean_batch(histogram: Mapping[int, int]) -> float:
    """Images per batch, weighted by how often each size occurred."""
    batches = sum(histogram.values())
    return sum(size * count for size, count in histogram.items()) / batches if batches else math.nan
