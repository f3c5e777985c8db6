"""What runs on the pipeline thread for one batch: groups, previews, drops, finals.

The model server hands a batch of submissions here. For each shape group it runs
one engine call with an observer that, after every denoising step, (1) sends
previews to streamed requests due one at this step and (2) drops the rows of
requests whose callers went away. When a group finishes, each request in it gets
its final images. Events go back to the event loop through ``emit``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from deployments.batching import GenerationGroup
from deployments.engine import Engine
from serve_app.job import BatchStats, GenerationJob, ImageEvent, partial_steps

Emit = Callable[[int, ImageEvent], None]


@dataclass(eq=False)
class Submission:
    """One request inside the model server; ``cancelled`` is read by the pipeline thread."""

    job: GenerationJob
    stream: bool
    cancelled: bool = False

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
    ) -> None:
        self.subs = subs
        self.group = group
        self.emit = emit
        self.stats = stats
        # Request index -> {step number: partial index} for streamed requests.
        self.schedule: dict[int, dict[int, int]] = {}
        for index in sorted({owner[0] for owner in group.owners}):
            job = subs[index].job
            if subs[index].stream and job.partial_images > 0:
                steps = partial_steps(group.steps, job.partial_images)
                self.schedule[index] = {step: i for i, step in enumerate(steps)}

    def __call__(
        self, step: int, total: int, rows: list[int], preview: Callable[[], np.ndarray]
    ) -> set[int]:
        owners = self.group.owners
        live = [r for r in rows if not self.subs[owners[r][0]].cancelled]
        # 1. Previews for streamed requests that are due one at this step.
        due = {
            index: schedule[step]
            for index, schedule in self.schedule.items()
            if step in schedule and not self.subs[index].cancelled
        }
        if due:
            images = preview()
            for index, partial_index in due.items():
                mine = [i for i, r in enumerate(rows) if owners[r][0] == index]
                event = ImageEvent("partial", images[mine], partial_index=partial_index)
                self.emit(index, event)
                self.stats.partial_images_sent += len(mine)
        # 2. Rows of cancelled requests leave the batch (if the scheduler allows it).
        drop = set(rows) - set(live)
        if drop and step < total:
            self.stats.dropped_images += len(drop)
            self.stats.steps_saved += len(drop) * (total - step)
        return drop if step < total else set()


def run_groups(
    engine: Engine,
    subs: Sequence[Submission],
    groups: Sequence[GenerationGroup],
    emit: Emit,
    stats: BatchStats,
) -> None:
    """Run every group of a batch in order, emitting events as they happen."""
    for group in groups:
        if all(subs[index].cancelled for index, _ in group.owners):
            stats.dropped_images += group.size
            stats.steps_saved += group.size * group.steps
            continue
        observer = GroupObserver(subs, group, emit, stats)
        output = engine.generate(group, observer)
        # Reassemble per request; a request missing images was cancelled mid-call.
        images: dict[int, dict[int, np.ndarray]] = {}
        for row, image in zip(output.rows, output.images, strict=True):
            index, image_index = group.owners[row]
            images.setdefault(index, {})[image_index] = image
        for index in sorted({owner[0] for owner in group.owners}):
            sub = subs[index]
            got = images.get(index, {})
            if len(got) == sub.n:
                stack = np.stack([got[i] for i in range(sub.n)])
                emit(index, ImageEvent("final", stack))
            elif not sub.cancelled:
                raise RuntimeError(
                    f"request {sub.job.request_id} lost {sub.n - len(got)} images in the pipeline"
                )
