"""What every packed flow-matching family does alike (FLUX.1, Qwen-Image, ...).

Their rows are :class:`FlowRow`s with 2x2-packed latents, stepped by their own
flow-match scheduler; the denoiser is the pipeline's transformer; there is no
feature cache; previews unpack a row and map its 16 channels to RGB with the
family's linear factors. A family subclasses :class:`PackedFlowFamily`, sets
``pipe``, ``device`` and ``torch_threads``, and adds what differs: prompt encoding,
the transformer call and guidance, the VAE decode.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, ClassVar, cast

import numpy as np

from common.errors import invalid
from common.job import GenerationJob
from deployments.model.families.base import Row, TickCache, admit_each
from deployments.model.families.batched_step import step_rows
from deployments.model.families.derived import DerivedPipelines, gray_image, rgb_image
from deployments.model.families.flow_match import (
    FlowRow,
    latent_rgb_preview,
    row_scheduler,
    start_at_strength,
    step_row,
)
from deployments.model.families.latent_start import keep_final_latents, upscaled_latents
from deployments.model.families.loading import pin_threads

# The A1111 sampler that is these families' own sampler: flow-matching Euler.
EULER = "EulerDiscreteScheduler"


class PackedFlowFamily:
    """The shared half of a packed flow-matching family (see the module docstring)."""

    name: ClassVar[str]
    latent_rgb: ClassVar[tuple[tuple[float, float, float], ...]]
    latent_rgb_bias: ClassVar[tuple[float, float, float]]
    pipe: Any
    pipelines: DerivedPipelines
    device: Any
    torch_threads: int

    @property
    def denoiser(self) -> Any:
        return self.pipe.transformer

    def pin_threads(self) -> None:
        pin_threads(self.torch_threads)

    def new_row(
        self,
        job: GenerationJob,
        owner: Any,
        index: int,
        prompt: Any,
        calculate_shift: Callable[..., float],
    ) -> FlowRow:
        """A row with its own scheduler, set up for this image's token count (``mu``);
        the family fills in the latents."""
        pipe, h, w = self.pipe, job.gen_height, job.gen_width
        seq_len = (h // pipe.vae_scale_factor // 2) * (w // pipe.vae_scale_factor // 2)
        scheduler = row_scheduler(pipe.scheduler, job.steps, seq_len, self.device, calculate_shift)
        return FlowRow(
            owner=owner,
            index=index,
            total=len(scheduler.timesteps),
            loras=job.loras,
            scheduler=scheduler,
            timesteps=scheduler.timesteps,
            latents=None,  # type: ignore[arg-type]
            height=h,
            width=w,
            guidance=job.guidance,
            prompt=prompt,
        )

    def refuse_what_flow_cannot_do(self, job: GenerationJob) -> None:
        """The 400s every flow-matching family shares: samplers other than Euler (none has
        a flow-matching equivalent here) and DeepCache (it needs a UNet)."""
        if job.scheduler is not None and (
            job.scheduler.class_name != EULER or job.scheduler.options
        ):
            raise invalid(
                f"The {self.name} family samples with flow-matching Euler only; this sampler "
                "or schedule has no flow-matching equivalent. Leave sampler_name (sampler) "
                "unset or use 'Euler'.",
                param="sampler_name",
                code="unsupported_sampler",
            )
        if job.deep_cache_interval is not None:
            raise invalid(
                f"cache_interval (DeepCache) needs a UNet; the {self.name} family has a "
                "transformer.",
                param="cache_interval",
                code="unsupported_value",
            )

    def start_from_image(
        self, row: FlowRow, job: GenerationJob, generator: Any, channels: int, dtype: Any
    ) -> FlowRow:
        """img2img / inpaint: the timesteps left at ``strength`` and noised init latents
        (and the inpaint mask), from the family's img2img/inpaint pipelines' helpers run
        with this row's scheduler and generator."""
        import torch

        h, w = row.height, row.width
        derived = self.pipelines.for_mode(job.mode)
        saved, derived.scheduler = derived.scheduler, row.scheduler
        try:
            row.timesteps = start_at_strength(row.scheduler, job.steps, job.strength or 1.0)
            row.total = len(row.timesteps)
            start = row.timesteps[:1].repeat(1)
            if job.init_latents is not None:  # the hires fix's latent upscale
                scale = self.pipe.vae_scale_factor * 2
                grid = (2 * (h // scale), 2 * (w // scale))
                init = upscaled_latents(job.init_latents, *grid, dtype)
            else:
                init = derived.image_processor.preprocess(
                    rgb_image(job.init_image), height=h, width=w
                )
                init = init.to(dtype=torch.float32)
            args = (init, start, 1, channels, h, w, dtype, self.device, generator)
            if job.mode == "img2img":
                out = derived.prepare_latents(*args)
                row.latents = out[0] if isinstance(out, tuple) else out  # FLUX adds its ids
                return row
            mask = derived.mask_processor.preprocess(gray_image(job.mask), height=h, width=w)
            row.latents, row.noise, row.image_latents = derived.prepare_latents(*args)[:3]
            row.mask, _ = derived.prepare_mask_latents(
                mask, init * (mask < 0.5), 1, channels, 1, h, w, dtype, self.device, generator
            )
            return row
        finally:
            derived.scheduler = saved

    def step(self, row: Row, prediction: Any) -> None:
        step_row(cast(FlowRow, row), prediction)

    def admit_many(
        self, requests: Sequence[tuple[GenerationJob, Any]]
    ) -> list[list[Row] | Exception]:
        """One request at a time (FLUX overrides this with one prompt encoding)."""
        return admit_each(self, requests)

    def step_batch(self, rows: Sequence[Row], predictions: Sequence[Any]) -> list[Any]:
        """Flow-match Euler rows in one vectorised update, inpaint rows one by one."""
        return step_rows(rows, predictions, self.step)

    def new_cache(self, interval: int) -> TickCache:
        raise ValueError(f"the {self.name} family has no feature cache (check() refuses it)")

    def unpacked(self, rows: Sequence[Row]) -> Any:
        """Packed rows of one size -> the latents the family's VAE takes."""
        import torch

        mine = cast(Sequence[FlowRow], rows)
        first = mine[0]
        latents = torch.cat([row.latents for row in mine])
        return self.pipe._unpack_latents(
            latents, first.height, first.width, self.pipe.vae_scale_factor
        )

    def keep_latents(self, rows: Sequence[Row]) -> None:
        """Before a decode: each row's final ``(1, C, h, w)`` latents to an owner that
        keeps them (the hires fix's first pass; ``latent_start.py``)."""
        keep_final_latents(rows, lambda row: self.preview_latents(self.unpacked([row])))

    def preview_latents(self, unpacked: Any) -> Any:
        """``(B, C, h, w)`` from :meth:`unpacked` (a video VAE's frame axis removed)."""
        return unpacked

    def preview(self, rows: Sequence[Row]) -> np.ndarray:
        return np.concatenate(
            [
                latent_rgb_preview(
                    self.preview_latents(self.unpacked([row])),
                    self.latent_rgb,
                    self.latent_rgb_bias,
                )
                for row in rows
            ]
        )
