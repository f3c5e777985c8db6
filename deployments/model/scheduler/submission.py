"""One request inside a model replica, as both batching modes see it.

The event loop creates it; the pipeline thread reads ``cancelled`` and sends events
back through ``sink`` (step mode) or the request-mode runner's ``emit``.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field

from common.errors import APIError
from common.job import GenerationJob, ImageEvent


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


def invalid_output_error() -> APIError:
    """The pipeline produced non-finite pixels (e.g. a float16 overflow to NaN)."""
    return APIError(
        "internal",
        "The model produced an invalid image (non-finite pixels); try another seed or prompt.",
        code="invalid_output",
    )
