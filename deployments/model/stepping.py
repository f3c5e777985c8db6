"""What runs on the pipeline thread for one batch: groups, previews, drops, finals.

The model server hands a batch of submissions here. For each shape group it runs
one engine call with an observer that, after every denoising step, (1) sends
previews to streamed requests due one at this step and (2) drops the rows of
requests whose callers went away. When a group finishes, each request in it gets
its final images. Events go back to the event loop through ``emit``.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace

import numpy as np

from common.errors import APIError
from common.job import BatchStats, GenerationJob, ImageEvent, partial_steps
from deployments.metrics import ModelMetrics
from deployments.model.batching import GenerationGroup
from deployments.model.engine import Engine

Emit = Callable[[int, ImageEvent], None]


@dataclass(eq=False)
class Submission:
    """One request inside the model server; ``cancelled`` is read by the pipeline thread."""

    job: GenerationJob
    stream: bool
    cancelled: bool = False
    arrived: float = field(default_factory=time.perf_counter)
    # Preview indices already sent, so a retried call does not send them twice.
    sent_partials: set[int] = field(default_factory=set)
    # Step mode: where the step loop (on the pipeline thread) sends this request's events.
    sink: Callable[[ImageEvent], None] | None = None
    # Step mode: finish at the next step with the images as they stand (interrupts.py).
    finish_now: bool = False

    @property
    def n(self) -> int:
        return self.job.n


class GroupObserver:
    """The engine's per-step observer for one group of a batch."""

    def __init__(
        self,
        subs: Sequence[Submission],
        group: GenerationGroup,
        emit: Emit,
        stats: BatchStats,
        metrics: ModelMetrics,
    ) -> None:
        self.subs = subs
        self.group = group
        self.emit = emit
        self.stats = stats
        self.metrics = metrics
        # Request index -> {step number: partial index} for streamed requests.
        self.schedule: dict[int, dict[int, int]] = {}
        for index in sorted({owner[0] for owner in group.owners}):
            job = subs[index].job
            if subs[index].stream and job.partial_images > 0:
                steps = partial_steps(group.denoising_steps, job.partial_images)
                self.schedule[index] = {step: i for i, step in enumerate(steps)}
        self.progress = [
            index
            for index in sorted({owner[0] for owner in group.owners})
            if subs[index].stream and subs[index].job.report_progress
        ]

    def __call__(
        self, step: int, total: int, rows: list[int], preview: Callable[[], np.ndarray]
    ) -> set[int]:
        owners = self.group.owners
        live = [r for r in rows if not self.subs[owners[r][0]].cancelled]
        # 1. Previews for streamed requests that are due one at this step.
        due = {
            index: schedule[step]
            for index, schedule in self.schedule.items()
            if step in schedule
            and not self.subs[index].cancelled
            and schedule[step] not in self.subs[index].sent_partials
        }
        if due:
            images = preview()
            for index, partial_index in due.items():
                mine = [i for i, r in enumerate(rows) if owners[r][0] == index]
                event = ImageEvent("partial", images[mine], partial_index=partial_index)
                self.subs[index].sent_partials.add(partial_index)
                self.emit(index, event)
                self.stats.partial_images_sent += len(mine)
        # 2. Step counts for streamed requests that asked for them (async jobs).
        for index in self.progress:
            if not self.subs[index].cancelled:
                self.emit(index, ImageEvent("progress", None, step=step, total_steps=total))
        # 3. Rows of cancelled requests leave the batch (if the scheduler allows it).
        drop = set(rows) - set(live)
        if drop and step < total:
            self.stats.dropped_images += len(drop)
            self.stats.steps_saved += len(drop) * (total - step)
            self.metrics.cancelled_images.inc(len(drop))
        return drop if step < total else set()


def run_groups(
    engine: Engine,
    subs: Sequence[Submission],
    groups: Sequence[GenerationGroup],
    emit: Emit,
    stats: BatchStats,
    metrics: ModelMetrics,
) -> None:
    """Run every group of a batch in order, emitting events as they happen."""
    for group in groups:
        run_group(engine, subs, group, emit, stats, metrics, may_split=True)


def run_group(
    engine: Engine,
    subs: Sequence[Submission],
    group: GenerationGroup,
    emit: Emit,
    stats: BatchStats,
    metrics: ModelMetrics,
    may_split: bool,
) -> None:
    """One pipeline call; if it fails, each request in it is retried alone, once.

    So an error caused by one request (or an out-of-memory at this batch size) fails
    only the requests that also fail on their own.
    """
    members = sorted({index for index, _ in group.owners})
    if all(subs[index].cancelled for index in members):
        stats.dropped_images += group.size
        stats.steps_saved += group.size * group.denoising_steps
        metrics.cancelled_images.inc(group.size)
        return
    started = time.perf_counter()
    try:
        output = engine.generate(group, GroupObserver(subs, group, emit, stats, metrics))
    except Exception as exc:  # noqa: BLE001 - isolated per request below
        if may_split and len(members) > 1:
            stats.split_batches += 1
            for index in members:
                run_group(
                    engine, subs, subgroup(group, index), emit, stats, metrics, may_split=False
                )
            return
        for index in members:
            fail(subs, index, exc, emit, stats)
        return
    metrics.generation_ms.observe((time.perf_counter() - started) * 1000)
    metrics.images.inc(len(output.rows))
    # Reassemble per request; a request missing images was cancelled mid-call.
    images: dict[int, dict[int, np.ndarray]] = {}
    invalid = {group.owners[row][0] for row in output.invalid_rows}
    for row, image in zip(output.rows, output.images, strict=True):
        index, image_index = group.owners[row]
        images.setdefault(index, {})[image_index] = image
    for index in members:
        sub = subs[index]
        got = images.get(index, {})
        if index in invalid:
            fail(subs, index, invalid_output_error(), emit, stats)
        elif len(got) == sub.n:
            emit(index, ImageEvent("final", np.stack([got[i] for i in range(sub.n)])))
        elif not sub.cancelled:
            error = RuntimeError(f"request {sub.job.request_id} lost images in the pipeline")
            fail(subs, index, error, emit, stats)


def invalid_output_error() -> APIError:
    """The pipeline produced non-finite pixels (e.g. a float16 overflow to NaN)."""
    return APIError(
        "internal",
        "The model produced an invalid image (non-finite pixels); try another seed or prompt.",
        code="invalid_output",
    )


def fail(
    subs: Sequence[Submission], index: int, error: Exception, emit: Emit, stats: BatchStats
) -> None:
    stats.failed_requests += 1
    emit(index, ImageEvent("error", None, error=error))


def subgroup(group: GenerationGroup, index: int) -> GenerationGroup:
    """The rows of one request, as a group of their own."""
    rows = [row for row, owner in enumerate(group.owners) if owner[0] == index]
    return replace(
        group,
        prompts=[group.prompts[r] for r in rows],
        negative_prompts=(
            None if group.negative_prompts is None else [group.negative_prompts[r] for r in rows]
        ),
        init_images=None if group.init_images is None else [group.init_images[r] for r in rows],
        masks=None if group.masks is None else [group.masks[r] for r in rows],
        seeds=[group.seeds[r] for r in rows],
        owners=[group.owners[r] for r in rows],
    )
