"""The torch side of step-level batching: admit rows, run one tick, decode finished rows.

One tick is one UNet call over rows of the same latent shape. Every row brings its
own timestep (the UNet gets a ``(B,)`` timestep tensor), its own conditioning and
its own guidance: a row with classifier-free guidance contributes two UNet batch
entries (unconditional, then conditional), a row without it one. After the call
each row takes its own ``scheduler.step``, and inpaint rows blend with their
re-noised init latents, exactly as the diffusers loop does for a batch of one.

Everything here runs on the replica's single pipeline thread.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from common.job import GenerationJob, LoraRef
from deployments.model.deepcache import DeepCache
from deployments.model.previews import latents_to_rgb
from deployments.model.rows import Row, encode_job_prompt, make_rows

if TYPE_CHECKING:
    import torch

LoraRows = Callable[[Sequence[tuple[LoraRef, ...]]], contextlib.AbstractContextManager[Any]]


class StepRunner:
    """Step primitives over a loaded ``DiffusersEngine``'s pipeline components.

    The engine is typed loosely: this module must not import ``engine`` (which
    builds runners), and it needs only ``pipe``, ``pipelines``, ``device``,
    ``scheduler_for`` and ``_pin_threads``.
    """

    def __init__(self, engine: Any) -> None:
        self.engine = engine
        self.pipe = engine.pipe
        self.unet = engine.pipe.unet

    @property
    def _lora_rows(self) -> LoraRows:
        """The LoRA seam: ``engine.lora_rows(per_row)`` applies per-row adapters inside
        the UNet's layers for the calls in its context (entry i: UNet batch row i)."""
        return getattr(self.engine, "lora_rows", None) or contextlib.nullcontext

    # -- admission ------------------------------------------------------------

    def admit(self, job: GenerationJob, owner: Any) -> list[Row]:
        """Encode the request's prompt once and prepare one row per image."""
        import torch

        self.engine._pin_threads()
        with torch.inference_mode():
            prompt = encode_job_prompt(self.engine.pipelines, job, self.engine.device)
            scheduler = self.engine.scheduler_for(job.scheduler)
            return make_rows(
                self.engine.pipelines, scheduler, job, owner, prompt, self.engine.device
            )

    def new_cache(self, interval: int) -> DeepCache:
        return DeepCache(self.unet, interval)

    # -- one tick ---------------------------------------------------------------

    def tick(self, rows: Sequence[Row], cache: DeepCache | None = None) -> list[Exception | None]:
        """One UNet call over ``rows``, then each row's scheduler step.

        A failure of the UNet call raises (nothing has changed yet: the caller may
        retry rows apart). A failure in one row's scheduler step is returned in that
        row's slot; the other rows have stepped.
        """
        import torch

        self.engine._pin_threads()
        with torch.inference_mode():
            preds = self._predict(rows, cache)
            errors: list[Exception | None] = []
            for row, pred in zip(rows, preds, strict=True):
                try:
                    self._step(row, pred)
                except Exception as exc:  # noqa: BLE001 - fails only this row's request
                    errors.append(exc)
                else:
                    errors.append(None)
            if cache is not None:
                cache.step_done(cache.step)
            return errors

    def _predict(self, rows: Sequence[Row], cache: DeepCache | None) -> list[torch.Tensor]:
        """The guided noise prediction of every row, from one UNet call."""
        import torch

        samples, timesteps, embeds, pooled, time_ids, conds = [], [], [], [], [], []
        per_row: list[tuple[LoraRef, ...]] = []
        for row in rows:
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
                per_row.append(row.loras)
                if p.timestep_cond is not None:
                    conds.append(p.timestep_cond)
        with self._lora_rows(per_row), cache.hooked() if cache else contextlib.nullcontext():
            noise = self.forward(
                rows,
                torch.cat(samples),
                torch.cat(timesteps).to(samples[0].device),
                encoder_hidden_states=torch.cat(embeds),
                timestep_cond=torch.cat(conds) if conds else None,
                added_cond_kwargs={
                    "text_embeds": torch.cat(pooled),
                    "time_ids": torch.cat(time_ids),
                },
            )
        preds, offset = [], 0
        for row in rows:
            if row.cfg:
                uncond, text = noise[offset : offset + 1], noise[offset + 1 : offset + 2]
                preds.append(uncond + row.guidance * (text - uncond))
                offset += 2
            else:
                preds.append(noise[offset : offset + 1])
                offset += 1
        return preds

    def forward(self, rows: Sequence[Row], sample: Any, timestep: Any, **kwargs: Any) -> Any:
        """The UNet call itself (a seam for fault-injection tests)."""
        return self.unet(sample, timestep, return_dict=False, **kwargs)[0]

    def _step(self, row: Row, pred: torch.Tensor) -> None:
        import torch

        t = row.timesteps[row.position]
        row.latents = row.scheduler.step(
            pred, t, row.latents, **row.step_kwargs, return_dict=False
        )[0]
        if row.image_latents is not None and row.masked_image_latents is None:
            # 4-channel inpaint: keep the (re-noised) original outside the mask.
            proper = row.image_latents
            if row.position < row.total - 1:
                next_t = row.timesteps[row.position + 1]
                proper = row.scheduler.add_noise(proper, row.noise, torch.tensor([next_t]))
            row.latents = (1 - row.mask) * proper + row.mask * row.latents
        row.position += 1

    # -- outputs ------------------------------------------------------------------

    def preview(self, rows: Sequence[Row]) -> np.ndarray:
        """Latent-resolution previews, each with its own row's noise level."""
        return np.concatenate([latents_to_rgb(row.latents, row.scheduler) for row in rows])

    def decode(self, rows: Sequence[Row]) -> tuple[np.ndarray, np.ndarray]:
        """VAE-decode rows of one shape together: uint8 images and a finite flag per row."""
        import torch

        pipe, vae = self.pipe, self.pipe.vae
        self.engine._pin_threads()
        with torch.inference_mode():
            latents = torch.cat([row.latents for row in rows])
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
            images = np.asarray(pipe.image_processor.postprocess(image, output_type="np"))
        finite = np.isfinite(images).reshape(len(images), -1).all(axis=1)
        images = np.nan_to_num(images, nan=0.0, posinf=1.0, neginf=0.0)
        return (images * 255.0).round().clip(0, 255).astype(np.uint8), finite
