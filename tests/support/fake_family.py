"""A fake family for the scheduler's unit tests: a few lines of arithmetic per step.

A row's "latent" is one float. Each step moves it by a prediction that depends on
the row's timestep, guidance and LoRA adapters, so an image is a pure function of
its request: the same alone, joined mid-flight or next to anything. Decoding fills
an image with the value. No torch, no diffusers.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np

from common.errors import invalid
from common.job import GenerationJob, LoraRef
from deployments.model.families.base import Row, TickCache, admit_each, step_each

SIZE = 4  # decoded images are SIZE x SIZE


@dataclass(eq=False, kw_only=True)
class FakeRow(Row):
    value: float
    guidance: float
    height: int

    @property
    def tick_key(self) -> int:
        return self.height


def expected(job: GenerationJob, index: int, loras: Sequence[LoraRef] = ()) -> int:
    """The pixel value a row of ``job`` ends with, computed without the scheduler."""
    value = float(job.seeds[index] % 97)
    for step in range(job.steps):
        value += prediction(job.steps - step, job.guidance, loras)
    return int(value) % 256


def prediction(timestep: int, guidance: float, loras: Sequence[LoraRef]) -> float:
    return timestep * 0.5 + guidance + sum(10 * ref.scale for ref in loras)


class FakeFamily:
    """Implements the ``Family`` protocol; records every call for the tests."""

    name: ClassVar[str] = "fake"
    demo_loras: ClassVar[tuple[str, ...]] = ()

    def __init__(self) -> None:
        self.calls: list[list[str]] = []  # request id of each row, per denoiser call
        self.entries: list[list[tuple[LoraRef, ...]]] = []  # adapters per batch entry
        self.applied: list[tuple[LoraRef, ...]] | None = None
        self.before_tick: Callable[[int], None] | None = None
        self.poison = "poison"
        self.lock = threading.Lock()

    @property
    def denoiser(self) -> Any:
        return None

    def pin_threads(self) -> None:
        return None

    def check(self, job: GenerationJob) -> None:
        if job.cache_interval:
            raise invalid("no cache here", param="cache_interval")

    def admit(self, job: GenerationJob, owner: Any) -> list[Row]:
        if "bad-admit" in job.prompt:
            raise ValueError("cannot prepare this request")
        return [
            FakeRow(
                owner=owner,
                index=index,
                total=job.steps,
                loras=job.loras,
                passes=2 if job.guidance > 1 else 1,
                value=float(seed % 97),
                guidance=job.guidance,
                height=job.gen_height,
            )
            for index, seed in enumerate(job.seeds)
        ]

    def predict(self, rows: Sequence[Row], cache: TickCache | None) -> list[Any]:
        if self.before_tick is not None:
            self.before_tick(len(self.calls))
        mine = [row for row in rows if isinstance(row, FakeRow)]
        ids = [getattr(row.owner, "job", None) for row in mine]
        self.calls.append([job.request_id if job else "-" for job in ids])
        self.entries.append(list(self.applied or []))
        if any(job is not None and self.poison in job.prompt for job in ids):
            raise RuntimeError("injected denoiser failure")
        return [
            prediction(row.total - row.position, row.guidance, row.loras) for row in mine
        ]

    def step(self, row: Row, prediction_: Any) -> None:
        assert isinstance(row, FakeRow)
        row.value += prediction_
        row.position += 1

    def admit_many(
        self, requests: Sequence[tuple[GenerationJob, Any]]
    ) -> list[list[Row] | Exception]:
        return admit_each(self, requests)

    def step_batch(self, rows: Sequence[Row], predictions: Sequence[Any]) -> list[Any]:
        return step_each(self, rows, predictions)

    def preview(self, rows: Sequence[Row]) -> np.ndarray:
        return self._images(rows)

    def decode(self, rows: Sequence[Row]) -> tuple[np.ndarray, np.ndarray]:
        return self._images(rows), np.ones(len(rows), dtype=bool)

    def _images(self, rows: Sequence[Row]) -> np.ndarray:
        values = [int(row.value) % 256 for row in rows if isinstance(row, FakeRow)]
        return np.stack([np.full((SIZE, SIZE, 3), v, np.uint8) for v in values])

    def new_cache(self, interval: int) -> TickCache:
        raise AssertionError("check() refuses cache_interval")

    def parse_lora(self, path: Any, name: str) -> Any:
        raise AssertionError("the fake family loads no files")

    @contextlib.contextmanager
    def lora_rows(self, per_entry: Sequence[tuple[LoraRef, ...]]) -> Iterator[None]:
        """Stands in for ``LoraBank.rows``: records what each call's entries got."""
        self.applied = list(per_entry)
        try:
            yield
        finally:
            self.applied = None
