"""Per-image state of the step loop: one row per image, prepared with the pipeline's helpers.

A row owns everything that makes its image independent of its tick mates: its
latents, its own scheduler instance (diffusers schedulers keep ``step_index`` and a
multistep history per instance, so rows never share one), its generator, its
prompt embeddings (encoded once per request, shared by that request's rows), its
guidance, and for img2img / inpaint its init latents, noise and mask.

The preparation follows ``StableDiffusionXL{,Img2Img,Inpaint}Pipeline.__call__``
step by step and calls the pipelines' own helpers (``encode_prompt``,
``_get_add_time_ids``, ``prepare_latents``, ``get_timesteps``,
``prepare_mask_latents``) with the row's scheduler swapped in, so a real checkpoint
behaves as it does in diffusers.
"""

from __future__ import annotations

import copy
import inspect
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from common.job import GenerationJob
from deployments.model.families.base import Row
from deployments.model.families.derived import DerivedPipelines, gray_image, rgb_image
from deployments.model.families.latent_start import upscaled_latents

if TYPE_CHECKING:
    import torch


@dataclass(eq=False)
class Prompt:
    """One request's conditioning, encoded once at admission (batch of one)."""

    embeds: torch.Tensor  # (1, 77, D)
    pooled: torch.Tensor  # (1, P)
    time_ids: torch.Tensor  # (1, 6 or 5)
    neg_embeds: torch.Tensor | None = None  # set when the request uses CFG
    neg_pooled: torch.Tensor | None = None
    neg_time_ids: torch.Tensor | None = None
    timestep_cond: torch.Tensor | None = None  # guidance embedding (LCM-style UNets)


@dataclass(eq=False, kw_only=True)
class SdxlRow(Row):
    """One SDXL image being denoised: latents, its own scheduler and generator."""

    scheduler: Any
    timesteps: Any  # 1-D tensor of the timesteps this row runs, in order
    latents: torch.Tensor  # (1, C, h, w)
    generator: Any
    guidance: float
    cfg: bool
    prompt: Prompt
    step_kwargs: dict[str, Any] = field(default_factory=dict)
    # inpaint: blend with the (re-noised) init latents outside the mask after each step.
    image_latents: torch.Tensor | None = None
    noise: torch.Tensor | None = None
    mask: torch.Tensor | None = None  # (1, 1, h, w)
    masked_image_latents: torch.Tensor | None = None  # 9-channel inpaint UNets only

    @property
    def tick_key(self) -> tuple[int, ...]:
        return tuple(self.latents.shape)


def uses_cfg(pipe: Any, guidance: float) -> bool:
    """diffusers' ``do_classifier_free_guidance`` for one row."""
    return guidance > 1 and pipe.unet.config.time_cond_proj_dim is None


def encode_job_prompt(pipes: DerivedPipelines, job: GenerationJob, device: Any) -> Prompt:
    """``encode_prompt`` plus the add-time ids, as the pipeline's own call computes them."""
    return encode_job_prompts(pipes, [job], device)[0]


def prompt_batch_key(pipe: Any, job: GenerationJob) -> tuple[bool, bool]:
    """Jobs with equal keys can share one ``encode_prompt`` call (same CFG, and a
    negative prompt on all of them or on none)."""
    return uses_cfg(pipe, job.guidance), job.negative_prompt is None


def encode_job_prompts(
    pipes: DerivedPipelines, jobs: list[GenerationJob], device: Any
) -> list[Prompt]:
    """One ``encode_prompt`` over the prompts of ``jobs`` (equal :func:`prompt_batch_key`),
    then each job's own add-time ids and guidance embedding."""
    import torch

    pipe = pipes.base
    cfg, no_negative = prompt_batch_key(pipe, jobs[0])
    embeds, neg, pooled, neg_pooled = pipe.encode_prompt(
        prompt=[job.prompt for job in jobs],
        device=device,
        num_images_per_prompt=1,
        do_classifier_free_guidance=cfg,
        negative_prompt=None if no_negative else [job.negative_prompt or "" for job in jobs],
    )
    if pipe.text_encoder_2 is None:
        projection_dim = int(pooled.shape[-1])
    else:
        projection_dim = pipe.text_encoder_2.config.projection_dim
    prompts = []
    for i, job in enumerate(jobs):
        size = (job.gen_height, job.gen_width)
        dtype = embeds.dtype
        if job.mode == "txt2img":
            time_ids = pipe._get_add_time_ids(
                size, (0, 0), size, dtype=dtype, text_encoder_projection_dim=projection_dim
            )
            neg_time_ids = time_ids
        else:  # the img2img / inpaint variant (aesthetic scores when the model wants them)
            derived = pipes.for_mode(job.mode)
            time_ids, neg_time_ids = derived._get_add_time_ids(
                size, (0, 0), size, 6.0, 2.5, size, (0, 0), size,
                dtype=dtype, text_encoder_projection_dim=projection_dim,
            )  # fmt: skip
        prompt = Prompt(embeds[i : i + 1], pooled[i : i + 1], time_ids.to(device))
        if cfg:
            prompt.neg_embeds, prompt.neg_pooled = neg[i : i + 1], neg_pooled[i : i + 1]
            prompt.neg_time_ids = neg_time_ids.to(device)
        if pipe.unet.config.time_cond_proj_dim is not None:
            scale = torch.tensor(job.guidance - 1).repeat(1)
            prompt.timestep_cond = pipe.get_guidance_scale_embedding(
                scale, embedding_dim=pipe.unet.config.time_cond_proj_dim
            ).to(device=device, dtype=dtype)
        prompts.append(prompt)
    return prompts


def step_kwargs(scheduler: Any, generator: Any) -> dict[str, Any]:
    """``prepare_extra_step_kwargs`` for one row's scheduler (eta 0, its own generator)."""
    accepted = set(inspect.signature(scheduler.step).parameters)
    kwargs: dict[str, Any] = {}
    if "eta" in accepted:
        kwargs["eta"] = 0.0
    if "generator" in accepted:
        kwargs["generator"] = generator
    return kwargs


def make_rows(
    pipes: DerivedPipelines,
    scheduler: Any,
    job: GenerationJob,
    owner: Any,
    prompt: Prompt,
    device: Any,
) -> list[SdxlRow]:
    """The rows of one request, each with its own scheduler copy, generator and latents."""
    import torch

    pipe = pipes.base
    rows = []
    for index, seed in enumerate(job.seeds):
        generator = torch.Generator("cpu").manual_seed(seed)
        sched = copy.deepcopy(scheduler)
        sched.set_timesteps(job.steps, device=device)
        cfg = uses_cfg(pipe, job.guidance)
        row = SdxlRow(
            owner=owner,
            index=index,
            total=len(sched.timesteps),
            passes=2 if cfg else 1,
            scheduler=sched,
            timesteps=sched.timesteps,
            latents=None,  # type: ignore[arg-type]
            generator=generator,
            guidance=job.guidance,
            cfg=cfg,
            prompt=prompt,
            loras=job.loras,
            step_kwargs=step_kwargs(sched, generator),
        )
        if job.mode == "txt2img":
            if hasattr(sched, "set_begin_index"):
                sched.set_begin_index(0)
            _with_scheduler(
                pipe, sched, lambda r=row, g=generator: _txt2img_latents(pipe, job, r, g)
            )
        else:
            _prepare_from_image(pipes, job, row, generator, device)
        rows.append(row)
    return rows


def _with_scheduler(pipe: Any, scheduler: Any, fn: Any) -> Any:
    """Run a pipeline helper with this row's scheduler in place (they read ``self.scheduler``)."""
    saved = pipe.scheduler
    pipe.scheduler = scheduler
    try:
        return fn()
    finally:
        pipe.scheduler = saved


def _txt2img_latents(pipe: Any, job: GenerationJob, row: SdxlRow, generator: Any) -> None:
    row.latents = pipe.prepare_latents(
        1,
        pipe.unet.config.in_channels,
        job.gen_height,
        job.gen_width,
        row.prompt.embeds.dtype,
        row.prompt.embeds.device,
        generator,
        None,
    )


def _prepare_from_image(
    pipes: DerivedPipelines, job: GenerationJob, row: SdxlRow, generator: Any, device: Any
) -> None:
    """img2img / inpaint: start at the strength's timestep from noised init latents."""
    pipe = pipes.base
    derived = pipes.for_mode(job.mode)
    dtype = row.prompt.embeds.dtype
    saved = derived.scheduler
    derived.scheduler = row.scheduler
    try:
        timesteps, remaining = derived.get_timesteps(job.steps, job.strength, device)
        if remaining < 1:
            raise ValueError(f"strength {job.strength} leaves no denoising step out of {job.steps}")
        row.timesteps = timesteps
        row.total = len(timesteps)
        latent_timestep = timesteps[:1].repeat(1)
        if job.mode == "img2img":
            image = _init_image_or_latents(derived, job, dtype)
            row.latents = derived.prepare_latents(
                image, latent_timestep, 1, 1, dtype, device, generator, True
            )
            return
        h, w = job.gen_height, job.gen_width
        init = derived.image_processor.preprocess(rgb_image(job.init_image), height=h, width=w)
        init = init.to(dtype=_float32())
        mask = derived.mask_processor.preprocess(gray_image(job.mask), height=h, width=w)
        masked_image = init * (mask < 0.5)
        latents, noise, image_latents = derived.prepare_latents(
            1, pipe.vae.config.latent_channels, h, w, dtype, device, generator, None,
            image=init, timestep=latent_timestep, is_strength_max=job.strength == 1.0,
            add_noise=True, return_noise=True, return_image_latents=True,
        )  # fmt: skip
        mask_latents, masked_latents = derived.prepare_mask_latents(
            mask, masked_image, 1, h, w, dtype, device, generator, False
        )
        row.latents, row.noise, row.image_latents, row.mask = (
            latents,
            noise,
            image_latents,
            mask_latents,
        )
        if pipe.unet.config.in_channels == 9:
            row.masked_image_latents = masked_latents
    finally:
        derived.scheduler = saved


def _init_image_or_latents(derived: Any, job: GenerationJob, dtype: Any) -> Any:
    """What img2img's ``prepare_latents`` starts from: the preprocessed init image, or
    (the hires fix's latent upscale) latents, which it noises without a VAE encode."""
    if job.init_latents is None:
        return derived.image_processor.preprocess(rgb_image(job.init_image))
    scale = derived.vae_scale_factor
    grid = (job.gen_height // scale, job.gen_width // scale)
    return upscaled_latents(job.init_latents, *grid, dtype)


def _float32() -> Any:
    import torch

    return torch.float32
