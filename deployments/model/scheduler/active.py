"""An admitted request inside the step loop, and what it is owed after each tick.

After every tick a streamed request that asked for progress (an async job being
watched) gets a ``progress`` event, and one whose preview schedule names the step
its rows just reached gets a ``partial`` event with every row's preview. A paused
request keeps its :class:`Active` (its rows are parked, not dropped).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np

from common.job import ImageEvent, partial_steps
from deployments.model.families.base import Row
from deployments.model.scheduler.submission import Submission

Preview = Callable[[Sequence[Row]], np.ndarray]


@dataclass(eq=False)
class Active:
    """An admitted request: its rows, finished images and preview schedule."""

    sub: Submission
    rows: list[Row]
    images: dict[int, np.ndarray] = field(default_factory=dict)
    schedule: dict[int, int] = field(default_factory=dict)  # position -> partial index
    failed: bool = False
    parked: list[Row] | None = None  # its unfinished rows while paused

    @classmethod
    def admitted(cls, sub: Submission, rows: list[Row]) -> Active:
        active = cls(sub, rows)
        if sub.stream and sub.job.partial_images > 0:
            steps = partial_steps(rows[0].total, sub.job.partial_images)
            active.schedule = {step: i for i, step in enumerate(steps)}
        return active


def events_after_tick(
    rows: Sequence[Row], request_of: Callable[[Row], Active], preview: Preview
) -> list[tuple[Submission, ImageEvent]]:
    """Step counts to requests that asked for them, then previews due at this step."""
    events: list[tuple[Submission, ImageEvent]] = []
    reported: set[int] = set()
    for row in rows:
        sub = row.owner
        if id(sub) in reported or not (sub.stream and sub.job.report_progress):
            continue
        reported.add(id(sub))
        if not sub.cancelled:
            event = ImageEvent("progress", None, step=row.position, total_steps=row.total)
            events.append((sub, event))
    seen: set[int] = set()
    for row in rows:
        active = request_of(row)
        if id(active) in seen or row.position not in active.schedule:
            continue
        seen.add(id(active))
        sub = active.sub
        partial_index = active.schedule[row.position]
        if sub.cancelled or partial_index in sub.sent_partials:
            continue
        mine = sorted(active.rows, key=lambda r: r.index)
        sub.sent_partials.add(partial_index)
        events.append((sub, ImageEvent("partial", preview(mine), partial_index)))
    return events
