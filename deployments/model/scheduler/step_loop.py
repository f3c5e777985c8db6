"""Step-level continuous batching: requests join and leave between denoising steps.

The loop runs on the replica's single pipeline thread while there is work, and
hands events back through each submission's ``sink``. At every step boundary it

1. admits waiting requests in arrival order while their images fit the row budget
   (a request is admitted whole; its prompt is encoded once, its rows prepared);
2. drops the rows of cancelled requests;
3. picks one tick group, round robin in the order the groups appeared (so no latent
   shape starves: every group with rows gets a tick before any group gets two);
4. runs one tick (one UNet call) over that group's rows, sends previews that are
   due, VAE-decodes the rows that finished together, and sends a request its
   final images as soon as all of its rows are done.

A tick group is the family's ``tick_key`` (a latent shape). DeepCache rows reuse
deep features of the same rows between steps, so they tick only with the rows
admitted in the same round with the same interval (a cohort, its own group); any
other rows share a call.

The loop knows no architecture: rows, ticks, previews and decodes go through the
family seam (``deployments/model/families/base.py``) via :class:`StepRunner`.

Failure isolation: if a tick's denoiser call raises, the tick is retried one request
at a time and the requests that fail alone fail; a scheduler step that raises, a
non-finite image, or a failed admission fails only its request.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Callable
from concurrent.futures import Executor
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from common.job import BatchStats, ImageEvent, partial_steps
from deployments.metrics import ModelMetrics
from deployments.model.families.base import Row, TickCache
from deployments.model.scheduler.runner import StepRunner
from deployments.model.scheduler.submission import Submission, invalid_output_error

logger = logging.getLogger("imagegen.steps")


@dataclass(eq=False)
class Active:
    """An admitted request: its rows, finished images and preview schedule."""

    sub: Submission
    rows: list[Row]
    images: dict[int, np.ndarray] = field(default_factory=dict)
    schedule: dict[int, int] = field(default_factory=dict)  # position -> partial index
    failed: bool = False


@dataclass(eq=False)
class TickGroup:
    key: tuple[Any, ...]
    rows: list[Row] = field(default_factory=list)
    cache: TickCache | None = None  # a DeepCache for a cohort


@dataclass
class StepStats:
    """Step-mode counters, reported beside :class:`BatchStats`."""

    unet_calls: int = 0
    rows_per_call_histogram: dict[int, int] = field(default_factory=dict)
    isolated_ticks: int = 0


class StepLoop:
    """Owns the active rows; ``submit`` may be called from any thread."""

    def __init__(
        self,
        runner: StepRunner,
        executor: Executor,
        budget: int,
        stats: BatchStats,
        metrics: ModelMetrics,
    ) -> None:
        self.runner = runner
        self.executor = executor
        self.budget = budget
        self.stats = stats
        self.step_stats = StepStats()
        self.metrics = metrics
        self._lock = threading.Lock()
        self._pending: deque[Submission] = deque()
        self._driving = False
        self._groups: dict[tuple[Any, ...], TickGroup] = {}
        self._requests: dict[int, Active] = {}
        self._round = 0

    # -- called from the event loop ---------------------------------------------

    def submit(self, sub: Submission) -> None:
        with self._lock:
            self._pending.append(sub)
            self.metrics.step_queue_depth.set(len(self._pending))
            if self._driving:
                return
            self._driving = True
        self.executor.submit(self._drive)

    @property
    def active_rows(self) -> int:
        # list(): one atomic copy, as the event loop may read while the pipeline thread adds.
        return sum(len(group.rows) for group in list(self._groups.values()))

    def snapshot(self) -> dict[str, Any]:
        """Counters for ``stats()``, copied under the lock (the pipeline thread writes)."""
        with self._lock:
            return {
                **asdict(self.stats),
                **asdict(self.step_stats),
                "waiting_requests": len(self._pending),
                "active_rows": self.active_rows,
            }

    # -- the pipeline thread ------------------------------------------------------

    def _drive(self) -> None:
        try:
            while True:
                self._admit()
                if not self._groups:
                    with self._lock:
                        if not self._pending:
                            self._driving = False
                            return
                    continue
                self._tick_next()
        except BaseException as exc:  # noqa: BLE001 - nothing may hang on a dead loop
            logger.exception("step loop failed; failing its requests")
            self._fail_everything(exc)

    def _admit(self) -> None:
        admitted: list[Submission] = []
        with self._lock:
            used = self.active_rows
            while self._pending:
                sub = self._pending[0]
                if not sub.cancelled and used + sub.n > self.budget and used > 0:
                    break  # strict arrival order: a large request is never overtaken
                self._pending.popleft()
                if sub.cancelled:
                    self._count_dropped(sub.n, sub.job.steps)
                    continue
                admitted.append(sub)
                used += sub.n
            self.metrics.step_queue_depth.set(len(self._pending))
        if not admitted:
            return
        self._round += 1
        now = time.perf_counter()
        images = sum(sub.n for sub in admitted)
        with self._lock:  # stats() snapshots under the same lock
            self.stats.record(len(admitted), images, 0, sum(sub.stream for sub in admitted))
        self.metrics.batch_images.observe(images)
        for sub in admitted:
            self.metrics.queue_wait_ms.observe((now - sub.arrived) * 1000)
            try:
                rows = self.runner.admit(sub.job, sub)
            except Exception as exc:  # noqa: BLE001 - a bad request fails alone
                self._fail(sub, exc)
                continue
            active = Active(sub, rows)
            if sub.stream and sub.job.partial_images > 0:
                steps = partial_steps(rows[0].total, sub.job.partial_images)
                active.schedule = {step: i for i, step in enumerate(steps)}
            self._requests[id(sub)] = active
            interval = sub.job.deep_cache_interval
            key: tuple[Any, ...] = (rows[0].tick_key, interval, self._round if interval else None)
            group = self._groups.get(key)
            if group is None:
                group = TickGroup(key)
                if interval:
                    group.cache = self.runner.new_cache(interval)
                self._groups[key] = group
            group.rows.extend(rows)
            if group.cache is not None:
                group.cache.invalidate()

    def _tick_next(self) -> None:
        key = next(iter(self._groups))
        group = self._groups.pop(key)
        self._drop_cancelled(group)
        if group.rows:
            self._tick(group)
        if group.rows:
            self._groups[key] = group  # to the back of the rotation

    def _drop_cancelled(self, group: TickGroup) -> None:
        keep = []
        for row in group.rows:
            if row.owner.cancelled:
                self._count_dropped(1, row.total - row.position)
                self._requests.pop(id(row.owner), None)
            else:
                keep.append(row)
        if len(keep) != len(group.rows) and group.cache is not None:
            group.cache.invalidate()
        group.rows = keep

    def _tick(self, group: TickGroup) -> None:
        rows = list(group.rows)
        started = time.perf_counter()
        try:
            errors = self.runner.tick(rows, group.cache)
            self._record_call(len(rows))
        except Exception:  # noqa: BLE001 - retried one request at a time below
            errors = self._isolate(group, rows)
        self.metrics.generation_ms.observe((time.perf_counter() - started) * 1000)
        failing: dict[int, tuple[Submission, Exception]] = {}
        for row, error in zip(rows, errors, strict=True):
            if error is not None:
                failing.setdefault(id(row.owner), (row.owner, error))
        for sub, error in failing.values():
            self._fail(sub, error)
        live = [row for row in rows if not self._request(row).failed]
        self._send_previews(live)
        finished = [row for row in live if row.done or row.owner.finish_now]
        group.rows = [row for row in live if not (row.done or row.owner.finish_now)]
        if group.cache is not None and len(group.rows) != len(rows):
            group.cache.invalidate()
        if finished:
            self._finish(finished)

    def _isolate(self, group: TickGroup, rows: list[Row]) -> list[Exception | None]:
        """The whole tick failed: run each request's rows alone; fail those that fail."""
        self.step_stats.isolated_ticks += 1
        self.stats.split_batches += 1
        errors: dict[int, Exception | None] = {}
        owners: dict[int, list[Row]] = {}
        for row in rows:
            owners.setdefault(id(row.owner), []).append(row)
        for mine in owners.values():
            if group.cache is not None:
                group.cache.invalidate()
            try:
                results = self.runner.tick(mine, group.cache)
                self._record_call(len(mine))
            except Exception as exc:  # noqa: BLE001 - this request fails alone
                results = [exc] * len(mine)
            for row, result in zip(mine, results, strict=True):
                errors[id(row)] = result
        return [errors[id(row)] for row in rows]

    def _record_call(self, rows: int) -> None:
        self.step_stats.unet_calls += 1
        self.stats.pipeline_calls += 1
        with self._lock:
            hist = self.step_stats.rows_per_call_histogram
            hist[rows] = hist.get(rows, 0) + 1
        self.metrics.rows_per_unet_call.observe(rows)

    def _send_previews(self, rows: list[Row]) -> None:
        """After a tick: step counts to requests that asked for them (async jobs), then
        previews to streamed requests due one at this step."""
        reported: set[int] = set()
        for row in rows:
            sub = row.owner
            if id(sub) in reported or not (sub.stream and sub.job.report_progress):
                continue
            reported.add(id(sub))
            if not sub.cancelled:
                event = ImageEvent("progress", None, step=row.position, total_steps=row.total)
                self._emit(sub, event)
        seen: set[int] = set()
        for row in rows:
            active = self._request(row)
            if id(active) in seen or row.position not in active.schedule:
                continue
            seen.add(id(active))
            sub = active.sub
            partial_index = active.schedule[row.position]
            if sub.cancelled or partial_index in sub.sent_partials:
                continue
            mine = sorted(active.rows, key=lambda r: r.index)
            sub.sent_partials.add(partial_index)
            self.stats.partial_images_sent += len(mine)
            self._emit(sub, ImageEvent("partial", self.runner.preview(mine), partial_index))

    def _finish(self, rows: list[Row]) -> None:
        """Decode the rows that finished together (per shape); complete their requests."""
        by_shape: dict[Any, list[Row]] = {}
        for row in rows:
            by_shape.setdefault(row.decode_key, []).append(row)
        for same in by_shape.values():
            try:
                pixels, finite = self.runner.decode(same)
            except Exception:  # noqa: BLE001 - decode each request alone
                self._decode_apart(same)
                continue
            self._deliver(same, pixels, finite)

    def _decode_apart(self, rows: list[Row]) -> None:
        owners: dict[int, list[Row]] = {}
        for row in rows:
            owners.setdefault(id(row.owner), []).append(row)
        for mine in owners.values():
            try:
                pixels, finite = self.runner.decode(mine)
            except Exception as exc:  # noqa: BLE001
                self._fail(mine[0].owner, exc)
                continue
            self._deliver(mine, pixels, finite)

    def _deliver(self, rows: list[Row], pixels: np.ndarray, finite: np.ndarray) -> None:
        self.metrics.images.inc(len(rows))
        for row, image, ok in zip(rows, pixels, finite, strict=True):
            active = self._request(row)
            if active.failed:
                continue
            if not ok:
                self._fail(row.owner, invalid_output_error())
                continue
            active.images[row.index] = image
            if len(active.images) == active.sub.n:
                self._requests.pop(id(active.sub), None)
                stack = np.stack([active.images[i] for i in range(active.sub.n)])
                self._emit(active.sub, ImageEvent("final", stack))

    # -- helpers ----------------------------------------------------------------------

    def _request(self, row: Row) -> Active:
        active = self._requests.get(id(row.owner))
        if active is None:  # dropped or failed meanwhile
            return Active(row.owner, [], failed=True)
        return active

    def _emit(self, sub: Submission, event: ImageEvent) -> None:
        sink: Callable[[ImageEvent], None] | None = sub.sink
        if sink is not None:
            sink(event)

    def _fail(self, sub: Submission, error: BaseException) -> None:
        active = self._requests.pop(id(sub), None)
        if active is not None:
            active.failed = True
        self.stats.failed_requests += 1
        self._emit(sub, ImageEvent("error", None, error=error))
        # Its rows leave every group at their next tick.
        for group in self._groups.values():
            group.rows = [row for row in group.rows if row.owner is not sub]

    def _count_dropped(self, images: int, steps: int) -> None:
        self.stats.dropped_images += images
        self.stats.steps_saved += images * steps
        self.metrics.cancelled_images.inc(images)

    def _fail_everything(self, exc: BaseException) -> None:
        with self._lock:
            pending = list(self._pending)
            self._pending.clear()
            self._driving = False
        subs = [active.sub for active in self._requests.values()] + pending
        self._requests.clear()
        self._groups.clear()
        for sub in subs:
            self._emit(sub, ImageEvent("error", None, error=exc))

    def run_alone(self, job: Any) -> np.ndarray:
        """Denoise one job start to end on the calling (pipeline) thread: the warm-up."""
        rows = self.runner.admit(job, None)
        while not rows[0].done:
            self.runner.tick(rows)
        return self.runner.decode(rows)[0]
