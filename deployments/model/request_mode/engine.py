"""Request mode's engine: one SDXL pipeline call per shape group (the baseline).

torch and diffusers are imported inside this module's functions only, so the
ingress and the encoder never pay for them.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from contextlib import nullcontext
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np

from common.model_config import ModelConfig
from deployments.model.families.loading import to_uint8
from deployments.model.families.sdxl.deepcache import DeepCache
from deployments.model.families.sdxl.family import SdxlFamily
from deployments.model.families.sdxl.previews import latents_to_rgb
from deployments.model.lora.bank import LoraBank, bank_for
from deployments.model.request_mode.batching import GenerationGroup
from deployments.model.request_mode.pipeline_args import SLICED_INPUTS, can_drop_rows, mode_kwargs
from deployments.model.scheduler.runner import StepRunner

logger = logging.getLogger("imagegen.engine")


class StepObserver(Protocol):
    """Called after each denoising step, inside the pipeline loop: keep it cheap.

    Args:
        step: steps completed so far (1-based).
        total: steps in this call.
        rows: the group's image indices still being denoised, in batch order.
        preview: returns ``(len(rows), h, w, 3)`` uint8 previews at latent resolution.

    Returns:
        Rows to drop from the batch from the next step on (cancelled requests).
    """

    def __call__(
        self, step: int, total: int, rows: list[int], preview: Callable[[], np.ndarray]
    ) -> set[int]: ...


@dataclass
class GroupOutput:
    """Finished images for the rows that were not dropped, in ``rows`` order.

    ``invalid_rows`` lists rows whose pixels were not finite (NaN/inf); their
    requests fail instead of returning garbage.
    """

    images: np.ndarray
    rows: list[int]
    invalid_rows: list[int] = field(default_factory=list)


class Engine(Protocol):
    """What the model server needs from a request-mode engine."""

    loras: LoraBank | None

    def generate(self, group: GenerationGroup, observer: StepObserver | None = None) -> GroupOutput:
        """Denoise one group; images are uint8 ``(k, height, width, 3)``."""
        ...


EngineFactory = Callable[[ModelConfig], Engine]


class DiffusersEngine:
    """An SDXL pipeline loaded with ``from_pretrained`` from any configured source."""

    def __init__(self, config: ModelConfig, family: SdxlFamily | None = None) -> None:
        family = family or SdxlFamily(config)
        self.family = family
        self.pipe = family.pipe
        self.pipelines = family.pipelines
        self.base_scheduler = family.base_scheduler
        self.scheduler_for = family.scheduler_for
        self._pin_threads = family.pin_threads
        # LoRA adapters applied per UNet batch row (deployments/model/lora/bank.py).
        self.loras: LoraBank | None = bank_for(
            config, family.pipe.unet, family.parse_lora, family.demo_loras
        )

    def generate(self, group: GenerationGroup, observer: StepObserver | None = None) -> GroupOutput:
        import torch

        self._pin_threads()
        # 1. One CPU generator per image: the same seed gives the same latents on any
        #    device and at any position in the batch.
        generators = [torch.Generator("cpu").manual_seed(seed) for seed in group.seeds]
        rows = list(range(group.size))
        pipe = self._pipe_for(group.mode)
        # The group's scheduler goes in first: whether rows may be dropped depends on it.
        pipe.scheduler = self.scheduler_for(group.scheduler)
        try:
            return self._generate(pipe, group, generators, rows, observer)
        finally:
            pipe.scheduler = self.base_scheduler

    def step_runner(self) -> StepRunner:
        """Step primitives over the same components (benchmarks compare the two modes)."""
        return StepRunner(self.family, self.loras.rows if self.loras is not None else None)

    def _pipe_for(self, mode: str) -> Any:
        return self.pipe if mode == "txt2img" else self.pipelines.for_mode(mode)

    def _generate(
        self,
        pipe: Any,
        group: GenerationGroup,
        generators: list[Any],
        rows: list[int],
        observer: StepObserver | None,
    ) -> GroupOutput:
        import torch

        deep_cache = (
            DeepCache(self.pipe.unet, group.cache_interval) if group.cache_interval else None
        )
        step_callback = (
            _StepCallback(
                pipe, observer, group.denoising_steps, rows, generators, can_drop_rows(group.mode)
            )
            if observer is not None
            else None
        )

        def callback(pipe: Any, step: int, timestep: Any, tensors: dict[str, Any]) -> dict:
            if deep_cache is not None:
                deep_cache.step_done(step)
            if step_callback is None:
                return tensors
            before = len(rows)
            tensors = step_callback(pipe, step, timestep, tensors)
            if deep_cache is not None and len(rows) != before:
                deep_cache.invalidate()  # cached features have the old batch size
            return tensors

        # 2. One pipeline call for the whole group, with its scheduler, DeepCache and
        #    each row's LoRA adapters (following the rows as cancelled ones leave).
        loras = (
            self.loras.follow(group.loras, rows)
            if self.loras is not None and group.loras
            else nullcontext()
        )
        try:
            with torch.inference_mode(), deep_cache or nullcontext(), loras:
                result = self._call_pipeline(group, generators, callback, pipe)
        except _AllRowsDropped:
            return GroupOutput(np.zeros((0, group.height, group.width, 3), np.uint8), [])
        # 3. Floats in [0, 1] -> uint8, which is what crosses the handle to the encoder.
        #    Non-finite pixels (a float16 overflow, say) fail their request.
        pixels, finite = to_uint8(result.images)
        invalid = [row for row, ok in zip(rows, finite, strict=True) if not ok]
        return GroupOutput(pixels, rows, invalid)

    def _call_pipeline(
        self, group: GenerationGroup, generators: list[Any], callback: Any, pipe: Any = None
    ) -> Any:
        pipe = pipe if pipe is not None else self._pipe_for(group.mode)
        # txt2img takes the size; img2img reads it from the init images (already at
        # the generation size) and inpaint gets it in mode_kwargs.
        size = {"width": group.width, "height": group.height} if group.mode == "txt2img" else {}
        return pipe(
            prompt=group.prompts,
            negative_prompt=group.negative_prompts,
            num_inference_steps=group.steps,
            guidance_scale=group.guidance,
            generator=generators,
            output_type="np",
            callback_on_step_end=callback,
            callback_on_step_end_tensor_inputs=list(SLICED_INPUTS),
            **size,
            **mode_kwargs(group),
        )


# Schedulers whose step keeps no per-sample history, so rows can leave mid-call.
DROPPABLE_SCHEDULERS = frozenset(
    {"EulerDiscreteScheduler", "EulerAncestralDiscreteScheduler", "DDIMScheduler"}
)


class _AllRowsDropped(Exception):
    """Every image of the call was cancelled: stop spending compute on it."""


class _StepCallback:
    """``callback_on_step_end``: previews for the observer, and dropping cancelled rows."""

    def __init__(
        self,
        pipe: Any,
        observer: StepObserver,
        total: int,
        rows: list[int],
        generators: list[Any],
        mode_can_drop: bool = True,
    ) -> None:
        self.pipe = pipe
        self.observer = observer
        self.total = total
        self.rows = rows  # shared with the caller: updated in place on drops
        self.generators = generators  # the same list the scheduler's step receives
        self.can_drop = (
            mode_can_drop
            and type(pipe.scheduler).__name__ in DROPPABLE_SCHEDULERS
            and pipe.unet.config.time_cond_proj_dim is None
        )

    def __call__(self, pipe: Any, step: int, timestep: Any, tensors: dict[str, Any]) -> dict:
        latents = tensors["latents"]
        drop = self.observer(
            step + 1, self.total, list(self.rows), lambda: latents_to_rgb(latents, pipe.scheduler)
        )
        if not drop or not self.can_drop:
            return tensors
        keep = [i for i, row in enumerate(self.rows) if row not in drop]
        if not keep:
            raise _AllRowsDropped
        return self._slice(tensors, keep)

    def _slice(self, tensors: dict[str, Any], keep: list[int]) -> dict[str, Any]:
        import torch

        batch = tensors["latents"].shape[0]
        index = torch.tensor(keep, device=tensors["latents"].device)
        sliced = {}
        for name in SLICED_INPUTS:
            tensor = tensors[name]
            if tensor.shape[0] == 2 * batch:  # classifier-free guidance: [uncond; cond]
                index2 = torch.cat([index, index + batch])
                sliced[name] = tensor.index_select(0, index2)
            else:
                sliced[name] = tensor.index_select(0, index)
        self.rows[:] = [self.rows[i] for i in keep]
        self.generators[:] = [self.generators[i] for i in keep]
        return sliced


def diffusers_engine_factory(config: ModelConfig) -> Engine:
    """Request mode's engine on a freshly loaded SDXL family.

    Request mode is the baseline the benchmarks compare step mode against, and it
    calls SDXL's pipelines directly; the other families serve in step mode only.
    """
    family = config.known_family()
    if family not in (None, SdxlFamily.name):
        raise ValueError(
            f"model {config.id!r}: batching.mode 'request' is the SDXL baseline; the "
            f"{family} family is served in step mode only (batching.mode: step)"
        )
    return DiffusersEngine(config)
