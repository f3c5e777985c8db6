"""The diffusion engine: loads a pipeline from config and runs one group per call.

torch and diffusers are imported inside this module's functions only, so the
ingress and the encoder never pay for them.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np

from common.job import SchedulerSpec
from common.model_config import ModelConfig
from deployments.model.batching import GenerationGroup
from deployments.model.deepcache import DeepCache
from deployments.model.img2img import SLICED_INPUTS, DerivedPipelines, can_drop_rows, mode_kwargs
from deployments.model.lora import bank_for
from deployments.model.previews import latents_to_rgb
from deployments.model.tiny_sdxl import BUILTIN_PREFIX, resolve_builtin

if TYPE_CHECKING:
    import torch

    from deployments.model.step_engine import StepRunner

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
    """What the model server needs from an engine."""

    def generate(self, group: GenerationGroup, observer: StepObserver | None = None) -> GroupOutput:
        """Denoise one group; images are uint8 ``(k, height, width, 3)``."""
        ...


EngineFactory = Callable[[ModelConfig], Engine]


def _torch_dtype(name: str) -> torch.dtype:
    import torch

    return {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}[name]


def _pick_device(name: str) -> str:
    import torch

    if name == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if name == "cuda" and not torch.cuda.is_available():
        raise RuntimeError("model config asks for device 'cuda' but no CUDA device is visible")
    return name


def _resolve_file(ref: str) -> Path:
    """A local path, or ``hf://<owner>/<repo>/<file>`` fetched through the hub cache."""
    if ref.startswith("hf://"):
        from huggingface_hub import hf_hub_download

        owner, repo, filename = ref.removeprefix("hf://").split("/", 2)
        return Path(hf_hub_download(f"{owner}/{repo}", filename))
    path = Path(ref).expanduser()
    if not path.is_file():
        raise FileNotFoundError(f"unet_weights file not found: {path}")
    return path


class DiffusersEngine:
    """An SDXL pipeline loaded with ``from_pretrained`` from any configured source."""

    def __init__(self, config: ModelConfig) -> None:
        import diffusers
        import torch

        self.torch_threads = config.torch_threads
        self._pin_threads()
        self.device = _pick_device(config.device)
        dtype = _torch_dtype(config.dtype)
        source: str | Path = config.source
        local_only = config.local_files_only
        if config.source.startswith(BUILTIN_PREFIX):
            source, local_only = resolve_builtin(config.source), True
        pipeline_cls = getattr(diffusers, config.pipeline)
        kwargs: dict[str, Any] = {"dtype": dtype, "local_files_only": local_only}
        if config.revision:
            kwargs["revision"] = config.revision
        if config.variant:
            kwargs["variant"] = config.variant
        pipe = pipeline_cls.from_pretrained(source, **kwargs)
        if config.unet_weights:
            from safetensors.torch import load_file

            state = load_file(str(_resolve_file(config.unet_weights)))
            pipe.unet.load_state_dict(state)
        if config.scheduler is not None:
            scheduler_cls = getattr(diffusers, config.scheduler.class_name, None)
            if scheduler_cls is None:
                raise ValueError(f"unknown scheduler class {config.scheduler.class_name!r}")
            pipe.scheduler = scheduler_cls.from_config(
                pipe.scheduler.config, **config.scheduler.config
            )
        pipe.set_progress_bar_config(disable=True)
        self.pipe = pipe.to(self.device)
        _apply_performance(self.pipe, config)
        # img2img / inpaint pipelines sharing these components, built on first use.
        self.pipelines = DerivedPipelines(self.pipe)
        # The configured scheduler; a group may ask for another one (A1111 samplers).
        self.base_scheduler = pipe.scheduler
        self._schedulers: dict[SchedulerSpec, Any] = {}
        # LoRA adapters applied per UNet batch row (deployments/model/lora.py);
        # ``lora_rows(per_row)`` is the context a step scheduler wraps each UNet call in.
        self.loras = bank_for(config, self.pipe.unet)
        self.lora_rows = self.loras.rows if self.loras is not None else None
        logger.info(
            "loaded %s from %s on %s (%s, %d torch threads)",
            config.id,
            source,
            self.device,
            config.dtype,
            torch.get_num_threads(),
        )

    def _pin_threads(self) -> None:
        """OpenMP thread counts are per calling thread, so pin in whichever thread runs us."""
        import torch

        if self.torch_threads is not None and torch.get_num_threads() != self.torch_threads:
            torch.set_num_threads(self.torch_threads)

    def scheduler_for(self, spec: SchedulerSpec | None) -> Any:
        """The configured scheduler, or one built from its config with ``spec``'s class/options."""
        if spec is None:
            return self.base_scheduler
        scheduler = self._schedulers.get(spec)
        if scheduler is None:
            import diffusers

            scheduler_cls = getattr(diffusers, spec.class_name, None)
            if scheduler_cls is None or not spec.class_name.endswith("Scheduler"):
                raise ValueError(f"unknown scheduler class {spec.class_name!r}")
            scheduler = scheduler_cls.from_config(self.base_scheduler.config, **spec.config())
            self._schedulers[spec] = scheduler
        return scheduler

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
        """Step primitives over this engine's components (``batching.mode: step``)."""
        from deployments.model.step_engine import StepRunner

        return StepRunner(self)

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
        images = np.asarray(result.images)
        finite = np.isfinite(images).reshape(len(images), -1).all(axis=1)
        invalid = [row for row, ok in zip(rows, finite, strict=True) if not ok]
        images = np.nan_to_num(images, nan=0.0, posinf=1.0, neginf=0.0)
        pixels = (images * 255.0).round().clip(0, 255).astype(np.uint8)
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


def _apply_performance(pipe: Any, config: ModelConfig) -> None:
    """The model's ``performance`` switches (GPU-oriented; all off by default)."""
    import torch

    perf = config.performance
    if perf.channels_last:
        pipe.unet.to(memory_format=torch.channels_last)
        pipe.vae.to(memory_format=torch.channels_last)
    if perf.vae_slicing:
        pipe.vae.enable_slicing()
    if perf.vae_tiling:
        pipe.vae.enable_tiling()
    if perf.compile_unet:
        pipe.unet = torch.compile(pipe.unet, dynamic=True)


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
    return DiffusersEngine(config)
