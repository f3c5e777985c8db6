"""The SDXL family: ``StableDiffusionXLPipeline`` checkpoints, a UNet step at a time.

One tick is one UNet call over rows of one latent shape. Every row brings its own
timestep (the UNet gets a ``(B,)`` timestep tensor), conditioning and guidance: a
row with classifier-free guidance takes two batch entries (uncond, then cond), a
row without it one. Each row then takes its own ``scheduler.step`` (any diffusers
scheduler: the A1111 samplers), and inpaint rows blend with their re-noised init
latents, exactly as the diffusers loop does for a batch of one.
"""

from __future__ import annotations

from collections.abc import Sequence
from contextlib import nullcontext
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, cast

import numpy as np

from common.families import BUILTIN_DEMO_LORAS
from common.job import GenerationJob, SchedulerSpec
from common.model_config import ModelConfig
from deployments.model.families.base import Row
from deployments.model.families.batched_step import step_rows
from deployments.model.families.derived import DerivedPipelines
from deployments.model.families.latent_start import keep_final_latents
from deployments.model.families.loading import (
    load_pipeline,
    pin_threads,
    resolve_file,
    to_uint8,
)
from deployments.model.families.sdxl.deepcache import DeepCache
from deployments.model.families.sdxl.previews import latents_to_rgb
from deployments.model.families.sdxl.rows import (
    SdxlRow,
    encode_job_prompt,
    encode_job_prompts,
    make_rows,
    prompt_batch_key,
)
from deployments.model.families.sdxl.tiny import TINY_SDXL, ensure_tiny_sdxl
from deployments.model.lora.parse import LoadedAdapter, parse_adapter, split_prefix

if TYPE_CHECKING:
    import torch

DEMO_LORAS = BUILTIN_DEMO_LORAS[TINY_SDXL]


class SdxlFamily:
    """A loaded SDXL pipeline and its step primitives."""

    name: ClassVar[str] = "sdxl"
    demo_loras: ClassVar[tuple[str, ...]] = DEMO_LORAS

    def __init__(self, config: ModelConfig) -> None:
        import torch

        self.config = config
        self.torch_threads = config.threads()
        self.pin_threads()
        pipe = load_pipeline(config, "StableDiffusionXLPipeline", {TINY_SDXL: ensure_tiny_sdxl})
        if config.unet_weights:
            from safetensors.torch import load_file

            pipe.unet.load_state_dict(load_file(str(resolve_file(config.unet_weights))))
        self.pipe = pipe
        self.device = pipe.device
        _apply_performance(pipe, config, torch)
        # img2img / inpaint pipelines sharing these components, built on first use.
        self.pipelines = DerivedPipelines(pipe)
        # The configured scheduler; a request may ask for another (A1111 samplers).
        self.base_scheduler = pipe.scheduler
        self._schedulers: dict[SchedulerSpec, Any] = {}

    # -- the seam -------------------------------------------------------------------

    @property
    def denoiser(self) -> Any:
        return self.pipe.unet

    def pin_threads(self) -> None:
        pin_threads(self.torch_threads)

    def check(self, job: GenerationJob) -> None:
        """Every diffusers sampler and DeepCache work on SDXL: nothing to refuse."""

    def scheduler_for(self, spec: SchedulerSpec | None) -> Any:
        """The configured scheduler, or one built from its config with ``spec``'s class."""
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

    def admit(self, job: GenerationJob, owner: Any) -> list[Row]:
        import torch

        with torch.inference_mode():
            prompt = encode_job_prompt(self.pipelines, job, self.device)
            scheduler = self.scheduler_for(job.scheduler)
            rows = make_rows(self.pipelines, scheduler, job, owner, prompt, self.device)
        return list(rows)

    def admit_many(self, requests: Sequence[tuple[GenerationJob, Any]]) -> list[Any]:
        """Several requests admitted in one round: their prompts encoded in one call per
        :func:`prompt_batch_key`; each request's rows (or its exception) in order."""
        import torch

        out: list[Any] = [None] * len(requests)
        groups: dict[tuple[bool, bool], list[int]] = {}
        for i, (job, _) in enumerate(requests):
            groups.setdefault(prompt_batch_key(self.pipe, job), []).append(i)
        with torch.inference_mode():
            for members in groups.values():
                jobs = [requests[i][0] for i in members]
                prompts = encode_job_prompts(self.pipelines, jobs, self.device)
                for i, prompt in zip(members, prompts, strict=True):
                    job, owner = requests[i]
                    try:
                        scheduler = self.scheduler_for(job.scheduler)
                        out[i] = list(
                            make_rows(self.pipelines, scheduler, job, owner, prompt, self.device)
                        )
                    except Exception as exc:  # noqa: BLE001 - fails only this request
                        out[i] = exc
        return out

    def new_cache(self, interval: int) -> DeepCache:
        return DeepCache(self.pipe.unet, interval)

    def predict(self, rows: Sequence[Row], cache: Any) -> list[torch.Tensor]:
        """The guided noise prediction of every row, from one UNet call."""
        import torch

        mine = cast(Sequence[SdxlRow], rows)
        samples, timesteps, embeds, pooled, time_ids, conds = [], [], [], [], [], []
        for row in mine:
            t = row.timesteps[row.position]
            scaled = row.scheduler.scale_model_input(row.latents, t)
            if row.masked_image_latents is not None:  # 9-channel inpaint UNets
                scaled = torch.cat([scaled, row.mask, row.masked_image_latents], dim=1)
            p = row.prompt
            halves = [(p.neg_embeds, p.neg_pooled, p.neg_time_ids)] if row.cfg else []
            halves.append((p.embeds, p.pooled, p.time_ids))
            for embed, pool, ids in halves:
                samples.append(scaled)
                timesteps.append(t.reshape(1).to(torch.float32))
                embeds.append(embed)
                pooled.append(pool)
                time_ids.append(ids)
                if p.timestep_cond is not None:
                    conds.append(p.timestep_cond)
        deep = cast(DeepCache | None, cache)
        with torch.inference_mode(), deep.hooked() if deep else nullcontext():
            noise = self.forward(
                torch.cat(samples),
                torch.cat(timesteps).to(samples[0].device),
                encoder_hidden_states=torch.cat(embeds),
                timestep_cond=torch.cat(conds) if conds else None,
                added_cond_kwargs={
                    "text_embeds": torch.cat(pooled),
                    "time_ids": torch.cat(time_ids),
                },
            )
        if deep is not None:
            deep.step_done(deep.step)
        preds, offset = [], 0
        for row in mine:
            if row.cfg:
                uncond, text = noise[offset : offset + 1], noise[offset + 1 : offset + 2]
                preds.append(uncond + row.guidance * (text - uncond))
            else:
                preds.append(noise[offset : offset + 1])
            offset += row.passes
        return preds

    def forward(self, sample: Any, timestep: Any, **kwargs: Any) -> Any:
        """The UNet call itself (a seam for fault-injection tests)."""
        return self.pipe.unet(sample, timestep, return_dict=False, **kwargs)[0]

    def step(self, row: Row, prediction: Any) -> None:
        import torch

        r = cast(SdxlRow, row)
        with torch.inference_mode():
            t = r.timesteps[r.position]
            r.latents = r.scheduler.step(
                prediction, t, r.latents, **r.step_kwargs, return_dict=False
            )[0]
            if r.image_latents is not None and r.masked_image_latents is None:
                # 4-channel inpaint: keep the (re-noised) original outside the mask.
                proper = r.image_latents
                if r.position < r.total - 1:
                    next_t = r.timesteps[r.position + 1]
                    proper = r.scheduler.add_noise(proper, r.noise, torch.tensor([next_t]))
                r.latents = (1 - r.mask) * proper + r.mask * r.latents
        r.position += 1

    def step_batch(self, rows: Sequence[Row], predictions: Sequence[Any]) -> list[Any]:
        """Plain-Euler rows in one vectorised update; other samplers and inpaint row by row."""
        return step_rows(rows, predictions, self.step)

    def preview(self, rows: Sequence[Row]) -> np.ndarray:
        """Latent-resolution previews, each with its own row's noise level."""
        mine = cast(Sequence[SdxlRow], rows)
        return np.concatenate([latents_to_rgb(row.latents, row.scheduler) for row in mine])

    def decode(self, rows: Sequence[Row]) -> tuple[np.ndarray, np.ndarray]:
        """VAE-decode rows of one shape together: uint8 images and a finite flag per row."""
        import torch

        keep_final_latents(rows, lambda row: cast(SdxlRow, row).latents)  # hires fix
        pipe, vae = self.pipe, self.pipe.vae
        with torch.inference_mode():
            latents = torch.cat([cast(SdxlRow, row).latents for row in rows])
            needs_upcasting = vae.dtype == torch.float16 and vae.config.force_upcast
            if needs_upcasting:
                pipe.upcast_vae()
                latents = latents.to(next(iter(vae.post_quant_conv.parameters())).dtype)
            mean = getattr(vae.config, "latents_mean", None)
            std = getattr(vae.config, "latents_std", None)
            if mean is not None and std is not None:
                shape = (1, len(mean), 1, 1)
                mean_t = torch.tensor(mean).view(shape).to(latents.device, latents.dtype)
                std_t = torch.tensor(std).view(shape).to(latents.device, latents.dtype)
                latents = latents * std_t / vae.config.scaling_factor + mean_t
            else:
                latents = latents / vae.config.scaling_factor
            try:
                image = vae.decode(latents, return_dict=False)[0]
            finally:
                if needs_upcasting:
                    vae.to(dtype=torch.float16)
            if getattr(pipe, "watermark", None) is not None:
                image = pipe.watermark.apply_watermark(image)
            images = pipe.image_processor.postprocess(image, output_type="np")
        return to_uint8(images)

    def parse_lora(self, path: Path, name: str) -> LoadedAdapter:
        """diffusers/PEFT or kohya keys, through ``StableDiffusionXLPipeline.lora_state_dict``."""
        return parse_adapter(path, name, self.pipe.unet, self._read_lora_keys, "SDXL")

    def _read_lora_keys(self, raw: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any], int]:
        from diffusers import StableDiffusionXLPipeline
        from diffusers.utils import convert_unet_state_dict_to_peft

        state, alphas = StableDiffusionXLPipeline.lora_state_dict(
            raw, unet_config=self.pipe.unet.config
        )
        unet_state, ignored = split_prefix(state, "unet.", ("text_encoder.", "text_encoder_2."))
        if unet_state and not any("lora_A" in k for k in unet_state):
            unet_state = convert_unet_state_dict_to_peft(unet_state)
        return unet_state, dict(alphas or {}), ignored


def _apply_performance(pipe: Any, config: ModelConfig, torch: Any) -> None:
    """The model's ``performance`` switches (GPU-oriented; all off by default)."""
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
