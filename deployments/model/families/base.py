"""The family seam: what the step scheduler needs from a model architecture.

A *family* (SDXL, FLUX.1, Qwen-Image, ...) owns everything that differs between
architectures: loading through diffusers' own pipeline class, prompt encoding,
latent shape and packing, the denoiser call for a batch of rows (each with its own
timestep and guidance), the per-row scheduler, init latents for img2img and inpaint,
decoding, previews, the size table and LoRA key parsing. The step loop, admission,
the row budget, deadlines, cancel, streaming and the LoRA row machinery are generic
and see a family only through :class:`Family` and :class:`Row`.

A family module may import torch and diffusers at module level only inside its
functions; this module stays import-light so the scheduler's unit tests run with a
fake family and no diffusers at all.
"""

from __future__ import annotations

from collections.abc import Hashable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, Protocol

import numpy as np

from common.job import GenerationJob, LoraRef

if TYPE_CHECKING:
    from deployments.model.lora.parse import LoadedAdapter


@dataclass(eq=False)
class Row:
    """One image being denoised. Families subclass it with their own tensors.

    ``passes`` is how many denoiser batch entries the row takes in a tick (2 with
    classifier-free guidance: uncond then cond, next to each other; 1 otherwise).
    ``tick_key`` says which rows may share a denoiser call (a latent shape, or a
    sequence length where the family allows mixed shapes in one call).
    """

    owner: Any  # the Submission it belongs to (None for warm-up rows)
    index: int  # image index within its request
    total: int  # denoising steps this row runs
    loras: tuple[LoraRef, ...] = ()
    passes: int = 1
    position: int = 0  # steps done

    @property
    def done(self) -> bool:
        return self.position >= self.total

    @property
    def tick_key(self) -> Hashable:
        raise NotImplementedError

    @property
    def decode_key(self) -> Hashable:
        """Rows with equal keys are decoded in one VAE call (the same image size)."""
        return self.tick_key


class TickCache(Protocol):
    """Per-group state a family keeps between ticks (DeepCache); reset on membership changes."""

    def invalidate(self) -> None: ...


class Family(Protocol):
    """One loaded model of one architecture, driven a step at a time.

    Every method runs on the replica's single pipeline thread.
    """

    name: ClassVar[str]
    # Built-in demo adapters for the tiny model (written to the LoRA folder at start).
    demo_loras: ClassVar[tuple[str, ...]]

    @property
    def denoiser(self) -> Any:
        """The module LoRA adapters hook into (a UNet or a transformer)."""
        ...

    def check(self, job: GenerationJob) -> None:
        """Raise an ``APIError`` (400) for what this family cannot do with ``job``."""
        ...

    def admit(self, job: GenerationJob, owner: Any) -> list[Row]:
        """Encode the request's prompt once and prepare one row per image."""
        ...

    def admit_many(
        self, requests: Sequence[tuple[GenerationJob, Any]]
    ) -> list[list[Row] | Exception]:
        """Requests admitted in the same round, prompts encoded together where the
        family can (:func:`admit_each` where it cannot): each request's rows, or the
        exception that refused it, in order. Raising refuses none of them (the runner
        then admits them one at a time)."""
        ...

    def predict(self, rows: Sequence[Row], cache: TickCache | None) -> list[Any]:
        """One denoiser call over ``rows`` (``sum(row.passes)`` batch entries, in row
        order); returns each row's guided prediction. Raising changes no row."""
        ...

    def step(self, row: Row, prediction: Any) -> None:
        """Advance ``row`` by one step with its own scheduler (and inpaint blend)."""
        ...

    def step_batch(self, rows: Sequence[Row], predictions: Sequence[Any]) -> list[Any]:
        """Step every row once (vectorised where the samplers allow: ``batched_step.py``;
        :func:`step_each` otherwise): each row's exception or None, in row order."""
        ...

    def preview(self, rows: Sequence[Row]) -> np.ndarray:
        """Cheap latent-resolution RGB previews, uint8 ``(len(rows), h, w, 3)``."""
        ...

    def decode(self, rows: Sequence[Row]) -> tuple[np.ndarray, np.ndarray]:
        """Decode rows of one ``decode_key``: uint8 images and a finite flag per row."""
        ...

    def new_cache(self, interval: int) -> TickCache:
        """A feature cache for ``cache_interval`` rows (only if ``check`` allowed it)."""
        ...

    def parse_lora(self, path: Path, name: str) -> LoadedAdapter:
        """Read an adapter file for this family's denoiser (raise ``APIError`` 400)."""
        ...

    def pin_threads(self) -> None:
        """Pin torch's intra-op threads in the calling thread (a no-op without torch)."""
        ...


def admit_each(
    family: Family, requests: Sequence[tuple[GenerationJob, Any]]
) -> list[list[Row] | Exception]:
    """:meth:`Family.admit_many` for a family that encodes prompts one at a time."""
    out: list[list[Row] | Exception] = []
    for job, owner in requests:
        try:
            out.append(family.admit(job, owner))
        except Exception as exc:  # noqa: BLE001 - fails only this request
            out.append(exc)
    return out


def step_each(family: Family, rows: Sequence[Row], predictions: Sequence[Any]) -> list[Any]:
    """:meth:`Family.step_batch` row by row: a failing step stays with its own row."""
    errors: list[Exception | None] = []
    for row, prediction in zip(rows, predictions, strict=True):
        try:
            family.step(row, prediction)
        except Exception as exc:  # noqa: BLE001 - fails only this row's request
            errors.append(exc)
        else:
            errors.append(None)
    return errors


def per_entry_adapters(rows: Sequence[Row]) -> list[tuple[LoraRef, ...]]:
    """Each denoiser batch entry's adapters, in the order :meth:`Family.predict` lays
    entries out (a row's passes next to each other)."""
    return [row.loras for row in rows for _ in range(row.passes)]
