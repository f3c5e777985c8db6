"""One tick over a family: the denoiser call with per-row LoRA, then each row's step.

This is the generic half of a tick. The family predicts (one denoiser call over the
rows, each with its own timestep, conditioning and guidance) and steps each row with
its own scheduler; this runner wraps the call in the LoRA row context (batch entry
*i* gets the adapters of the row it belongs to) and steps the rows through the
family's ``step_batch`` (plain-Euler rows in one vectorised update:
``families/batched_step.py``), which keeps a failing row's step from its tick mates.
Everything here runs on the replica's single pipeline thread.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from common.job import GenerationJob, LoraRef
from deployments.model.families.base import (
    Family,
    Row,
    TickCache,
    admit_each,
    per_entry_adapters,
)

LoraRows = Callable[[Sequence[tuple[LoraRef, ...]]], contextlib.AbstractContextManager[Any]]


def _no_adapters(
    per_entry: Sequence[tuple[LoraRef, ...]],
) -> contextlib.AbstractContextManager[Any]:
    if any(per_entry):
        raise RuntimeError("rows name LoRA adapters but this model has no adapter bank")
    return contextlib.nullcontext()


class StepRunner:
    """Step primitives over a loaded :class:`Family` and its LoRA bank's row context."""

    def __init__(self, family: Family, lora_rows: LoraRows | None = None) -> None:
        self.family = family
        self._lora_rows: LoraRows = lora_rows or _no_adapters

    def admit(self, job: GenerationJob, owner: Any) -> list[Row]:
        self.family.pin_threads()
        return self.family.admit(job, owner)

    def admit_many(
        self, requests: Sequence[tuple[GenerationJob, Any]]
    ) -> list[list[Row] | Exception]:
        """Requests admitted in the same round: each one's rows, or the exception that
        refused it, in order. The family encodes their prompts together where it can;
        if that fails as a whole, each request is admitted alone so a bad one fails alone.
        """
        self.family.pin_threads()
        if len(requests) > 1:
            try:
                return list(self.family.admit_many(requests))
            except Exception:  # noqa: BLE001 - retried one request at a time below
                pass
        return admit_each(self.family, requests)

    def new_cache(self, interval: int) -> TickCache:
        return self.family.new_cache(interval)

    def tick(self, rows: Sequence[Row], cache: TickCache | None = None) -> list[Exception | None]:
        """One denoiser call over ``rows``, then each row's scheduler step.

        A failure of the call raises (nothing has changed yet: the caller may retry
        rows apart). A failure in one row's step is returned in that row's slot; the
        other rows have stepped.
        """
        self.family.pin_threads()
        with self._lora_rows(per_entry_adapters(rows)):
            predictions = self.family.predict(rows, cache)
        return list(self.family.step_batch(rows, predictions))

    def preview(self, rows: Sequence[Row]) -> np.ndarray:
        return self.family.preview(rows)

    def decode(self, rows: Sequence[Row]) -> tuple[np.ndarray, np.ndarray]:
        self.family.pin_threads()
        return self.family.decode(rows)
