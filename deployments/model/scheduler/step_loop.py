"""Step-level continuous batching: requests join and leave between denoising steps.

The loop runs on the replica's single pipeline thread while there is work, and
hands events back through each submission's ``sink``. At every step boundary it

1. asks the admission policy (``policy.py``) what to do with the requests that are
   not running: admit waiting ones and resume paused ones that fit the latent-pixel
   budget, pause running batch rows for interactive ones, refuse those that cannot
   meet their deadline (a request is admitted whole; its prompt is encoded once);
2. drops the rows of cancelled requests;
3. picks one tick group, round robin (``groups.py``: no latent shape starves);
4. runs one tick (one denoiser call) over that group's rows, sends previews that are
   due, VAE-decodes the rows that finished together, and sends a request its
   final images as soon as all of its rows are done.

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
from collections.abc import Callable
from concurrent.futures import Executor
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from common.job import BatchStats, ImageEvent
from deployments.metrics import ModelMetrics
from deployments.model.families.base import Row
from deployments.model.scheduler.active import Active, events_after_tick
from deployments.model.scheduler.class_stats import ClassStats
from deployments.model.scheduler.groups import TickGroup, TickGroups
from deployments.model.scheduler.policy import AdmissionPolicy
from deployments.model.scheduler.runner import StepRunner
from deployments.model.scheduler.submission import Submission, invalid_output_error

logger = logging.getLogger("imagegen.steps")


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
        policy: AdmissionPolicy,
        stats: BatchStats,
        metrics: ModelMetrics,
    ) -> None:
        self.runner = runner
        self.executor = executor
        self.policy = policy
        self.stats = stats
        self.step_stats = StepStats()
        self.classes = ClassStats(metrics)
        self.metrics = metrics
        self._lock = threading.Lock()
        self._pending: list[Submission] = []
        self._driving = False
        self._groups = TickGroups(runner.new_cache)
        self._requests: dict[int, Active] = {}

    # -- called from the event loop ---------------------------------------------

    def submit(self, sub: Submission) -> None:
        now = self.policy.now()
        sub.arrived = now
        if sub.job.deadline_at is not None:
            sub.deadline = now + (sub.job.deadline_at - time.time())
        refusal = self.policy.late(sub, now)
        if refusal is not None:  # out of reach already: refused before it queues
            with self._lock:
                self.classes.refused_for_deadline()
            self._emit(sub, ImageEvent("error", None, error=refusal))
            return
        sub.start_idle(now, paused=False)
        with self._lock:
            self._pending.append(sub)
            self.metrics.step_queue_depth.set(len(self._pending))
            if self._driving:
                return
            self._driving = True
        self.executor.submit(self._drive)

    @property
    def active_rows(self) -> int:
        return self._groups.row_count

    def snapshot(self) -> dict[str, Any]:
        """Counters for ``stats()``, copied under the lock (the pipeline thread writes)."""
        with self._lock:
            per_step = self.policy.step_clock.per_step_s
            return {
                **asdict(self.stats),
                **asdict(self.step_stats),
                "waiting_requests": len(self._pending),
                "active_rows": self.active_rows,
                # list(): one atomic copy, as the pipeline thread may add meanwhile.
                "paused_requests": sum(a.parked is not None for a in list(self._requests.values())),
                "latent_pixel_budget": self.policy.budget,
                "order": self.policy.order,
                "per_step_ms": None if per_step is None else round(per_step * 1000, 2),
                "priority": self.classes.snapshot(),
            }

    # -- the pipeline thread ------------------------------------------------------

    def _drive(self) -> None:
        try:
            while True:
                self._admit()
                if not self._groups:
                    with self._lock:
                        if not self._pending and not self._paused():
                            self._driving = False
                            return
                    continue
                self._tick_next()
        except BaseException as exc:  # noqa: BLE001 - nothing may hang on a dead loop
            logger.exception("step loop failed; failing its requests")
            self._fail_everything(exc)

    def _paused(self) -> list[Active]:
        return [a for a in self._requests.values() if a.parked is not None]

    def _admit(self) -> None:
        for active in self._paused():
            if active.sub.cancelled:  # left while paused
                self._requests.pop(id(active.sub), None)
                self.classes.resumed(len(active.parked or ()))
                self._count_dropped(len(active.parked or ()), active.sub.steps_left)
        paused = {id(a.sub): a for a in self._paused()}
        running = [a.sub for a in self._requests.values() if a.parked is None and not a.failed]
        with self._lock:
            for sub in [s for s in self._pending if s.cancelled]:
                self._pending.remove(sub)
                self._count_dropped(sub.n, sub.job.steps)
            plan = self.policy.plan(self._pending, [a.sub for a in paused.values()], running)
            leaving = {id(sub) for sub in plan.start} | {id(sub) for sub, _ in plan.refuse}
            self._pending = [sub for sub in self._pending if id(sub) not in leaving]
            self.metrics.step_queue_depth.set(len(self._pending))
            for _ in plan.refuse:
                self.classes.refused_for_deadline()
        for sub, refusal in plan.refuse:
            self._emit(sub, ImageEvent("error", None, error=refusal))  # type: ignore[arg-type]
        now = self.policy.now()
        for victim in plan.pause:
            self._pause(self._requests[id(victim)], now)
        admitted = [sub for sub in plan.start if id(sub) not in paused]
        for sub in plan.start:
            if id(sub) in paused:
                self._resume(paused[id(sub)], now)
        if admitted:
            self._admit_new(admitted, now)  # type: ignore[arg-type]

    def _admit_new(self, admitted: list[Submission], now: float) -> None:
        self._groups.new_round()
        images = sum(sub.n for sub in admitted)
        with self._lock:  # stats() snapshots under the same lock
            self.stats.record(len(admitted), images, 0, sum(sub.stream for sub in admitted))
            for sub in admitted:
                self.classes.admitted(sub.priority, (now - sub.arrived) * 1000)
        self.metrics.batch_images.observe(images)
        for sub in admitted:
            sub.stop_idle(now)
            self.metrics.queue_wait_ms.observe((now - sub.arrived) * 1000)
        # One prompt-encoder call for the round where the family can; a bad request fails alone.
        prepared = self.runner.admit_many([(sub.job, sub) for sub in admitted])
        for sub, rows in zip(admitted, prepared, strict=True):
            if isinstance(rows, Exception):
                self._fail(sub, rows)
                continue
            self._requests[id(sub)] = Active.admitted(sub, rows)
            self._groups.place(rows, sub.job.deep_cache_interval)

    def _pause(self, active: Active, now: float) -> None:
        """Take a running request's rows out of the batch; they keep all their state."""
        active.parked = self._groups.take(active.sub)
        active.sub.start_idle(now, paused=True)
        with self._lock:
            self.classes.paused(len(active.parked))

    def _resume(self, active: Active, now: float) -> None:
        parked, active.parked = active.parked or [], None
        active.sub.stop_idle(now)
        with self._lock:
            self.classes.resumed(len(parked))
        if parked:
            self._groups.new_round()  # a DeepCache cohort starts afresh
            self._groups.place(parked, active.sub.job.deep_cache_interval)

    def _tick_next(self) -> None:
        group = self._groups.next()
        self._drop_cancelled(group)
        if group.rows:
            now = self.policy.now()
            if group.last_tick is not None:  # a row of this group waits this long per step
                self.policy.step_clock.observe(now - group.last_tick)
            group.last_tick = now
            self._tick(group)
        self._groups.requeue(group)  # to the back of the rotation

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
        for sub, event in events_after_tick(rows, self._request, self.runner.preview):
            if event.kind == "partial":
                self.stats.partial_images_sent += len(event.pixels)
            self._emit(sub, event)

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
                sub = active.sub
                self._requests.pop(id(sub), None)
                stack = np.stack([active.images[i] for i in range(sub.n)])
                with self._lock:
                    self.classes.finished(sub.priority, (self.policy.now() - sub.arrived) * 1000)
                self._emit(sub, ImageEvent("final", stack, paused_ms=sub.paused_s * 1000))

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
        self._groups.take(sub)  # its rows leave every group (the ticking one drops them)

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
        self.classes.paused_rows = 0
        for sub in subs:
            self._emit(sub, ImageEvent("error", None, error=exc))

    def run_alone(self, job: Any) -> np.ndarray:
        """Denoise one job start to end on the calling (pipeline) thread: the warm-up."""
        rows = self.runner.admit(job, None)
        while not rows[0].done:
            started = time.perf_counter()
            self.runner.tick(rows)
            self.policy.step_clock.observe(time.perf_counter() - started)
        return self.runner.decode(rows)[0]
