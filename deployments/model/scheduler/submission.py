"""One request inside a model replica, as both batching modes see it.

The event loop creates it; the pipeline thread reads ``cancelled`` and sends events
back through ``sink`` (step mode) or the request-mode runner's ``emit``.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from common.errors import APIError
from common.job import GenerationJob, ImageEvent, Priority
from common.sizes import latent_pixels


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
    # Step mode's policy (scheduler/policy.py), in the loop's clock: the deadline, the
    # time spent not running (queued or paused) and, of it, paused.
    deadline: float | None = None
    idle_s: float = 0.0
    idle_since: float | None = None
    paused_s: float = 0.0
    paused_since: float | None = None
    preemptions: int = 0

    @property
    def n(self) -> int:
        return self.job.n

    @property
    def priority(self) -> Priority:
        return self.job.priority

    @property
    def latent_pixels(self) -> int:
        return self.n * latent_pixels(self.job.gen_width, self.job.gen_height)

    @property
    def steps_left(self) -> int:
        """Denoising steps a waiting request will run (img2img runs its strength's share)."""
        if self.job.strength is None:
            return self.job.steps
        return max(1, math.ceil(self.job.steps * self.job.strength))

    def waited(self, now: float) -> float:
        """Seconds spent queued or paused so far."""
        return self.idle_s + (0.0 if self.idle_since is None else now - self.idle_since)

    def start_idle(self, now: float, paused: bool) -> None:
        self.idle_since = now
        if paused:
            self.paused_since = now
            self.preemptions += 1

    def stop_idle(self, now: float) -> None:
        if self.idle_since is not None:
            self.idle_s += now - self.idle_since
            self.idle_since = None
        if self.paused_since is not None:
            self.paused_s += now - self.paused_since
            self.paused_since = None


def invalid_output_error() -> APIError:
    """The pipeline produced non-finite pixels (e.g. a float16 overflow to NaN)."""
    return APIError(
        "internal",
        "The model produced an invalid image (non-finite pixels); try another seed or prompt.",
        code="invalid_output",
    )
