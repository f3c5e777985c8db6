"""A request's text conditioning, and one Qwen-Image row per image, from the pipelines'
own helpers.

The prompt (and with true CFG the negative prompt) is encoded once per request with
``encode_prompt``; the request's rows share it.

The preparation follows ``QwenImage{,Img2Img,Inpaint}Pipeline.__call__`` for a batch of
one: the row's scheduler gets the pipeline's sigmas and the dynamic shift ``mu`` from
the image's token count; txt2img draws packed noise with ``prepare_latents``; img2img
and inpaint start part-way in (``get_timesteps`` via ``start_at_strength``), encode the
init image and noise it with the derived pipeline's ``prepare_latents``, and inpaint
adds the packed mask from ``prepare_mask_latents``. The helpers read
``self.scheduler``, so the row's own scheduler is swapped in while they run, and every
random draw uses the row's own generator: a seed gives the same image alone and in
any batch.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from common.job import GenerationJob
from deployments.model.families.derived import DerivedPipelines, gray_image, rgb_image
from deployments.model.families.flow_match import (
    FlowRow,
    image_seq_len,
    row_scheduler,
    start_at_strength,
)

if TYPE_CHECKING:
    import torch


@dataclass(eq=False)
class QwenPrompt:
    """One request's text conditioning, encoded once: ``(1, L, D)`` embeddings each.

    A mask is None when every token is valid (``encode_prompt`` drops all-ones masks).
    """

    embeds: torch.Tensor
    mask: torch.Tensor | None
    neg_embeds: torch.Tensor | None = None  # set when the request uses true CFG
    neg_mask: torch.Tensor | None = None


def encode_job_prompt(pipe: Any, job: GenerationJob, device: Any) -> QwenPrompt:
    """``encode_prompt`` for the prompt and, with true CFG (guidance above 1), the negative
    prompt: the request's own, or ``""`` as the issue's true CFG default."""
    embeds, mask = pipe.encode_prompt(job.prompt, device=device)
    prompt = QwenPrompt(embeds, mask)
    if job.guidance > 1:
        negative = job.negative_prompt if job.negative_prompt is not None else ""
        prompt.neg_embeds, prompt.neg_mask = pipe.encode_prompt(negative, device=device)
    return prompt


def make_row(
    pipes: DerivedPipelines,
    job: GenerationJob,
    owner: Any,
    index: int,
    generator: Any,
    prompt: QwenPrompt,
    device: Any,
) -> FlowRow:
    """Image ``index`` of ``job``: its scheduler, timesteps and initial packed latents."""
    from diffusers.pipelines.qwenimage.pipeline_qwenimage import calculate_shift

    pipe, h, w = pipes.base, job.gen_height, job.gen_width
    seq_len = image_seq_len(h, w, pipe.vae_scale_factor)
    scheduler = row_scheduler(pipe.scheduler, job.steps, seq_len, device, calculate_shift)
    row = FlowRow(
        owner=owner,
        index=index,
        total=len(scheduler.timesteps),
        loras=job.loras,
        passes=2 if prompt.neg_embeds is not None else 1,
        scheduler=scheduler,
        timesteps=scheduler.timesteps,
        latents=None,  # type: ignore[arg-type]
        height=h,
        width=w,
        guidance=job.guidance,
        prompt=prompt,
    )
    channels = pipe.transformer.config.in_channels // 4
    dtype = prompt.embeds.dtype
    if job.mode == "txt2img":
        scheduler.set_begin_index(0)
        row.latents = pipe.prepare_latents(1, channels, h, w, dtype, device, generator)
        return row
    derived = pipes.for_mode(job.mode)
    saved, derived.scheduler = derived.scheduler, scheduler
    try:
        row.timesteps = start_at_strength(scheduler, job.steps, job.strength or 1.0)
        row.total = len(row.timesteps)
        start = row.timesteps[:1].repeat(1)
        init = derived.image_processor.preprocess(rgb_image(job.init_image), height=h, width=w)
        init = init.to(dtype=_float32())
        if job.mode == "img2img":
            row.latents = derived.prepare_latents(
                init, start, 1, channels, h, w, dtype, device, generator
            )
            return row
        mask = derived.mask_processor.preprocess(gray_image(job.mask), height=h, width=w)
        row.latents, row.noise, row.image_latents = derived.prepare_latents(
            init, start, 1, channels, h, w, dtype, device, generator
        )
        row.mask, _ = derived.prepare_mask_latents(
            mask, init * (mask < 0.5), 1, channels, 1, h, w, dtype, device, generator
        )
        return row
    finally:
        derived.scheduler = saved


def _float32() -> Any:
    import torch

    return torch.float32
