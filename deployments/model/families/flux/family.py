"""The FLUX.1 family (dev, schnell, Krea): a ``FluxTransformer2DModel`` step at a time.

One tick is one transformer call over rows of one latent grid. Every row brings its
own timestep and its own guidance, which FLUX takes through the transformer's
guidance embedding (dev and Krea; schnell has none and ignores it): there is no
second classifier-free pass, so a row is one batch entry. Latents are packed 2x2
into 64-channel tokens; position ids come from the grid, so rows of different sizes
never share a call. Prompt encoding, latent preparation for txt2img, img2img and
inpaint, and decoding all call ``FluxPipeline``'s (and its img2img and inpaint
siblings') own helpers with the row's own scheduler and generator, so a row gives
what diffusers gives for a batch of one.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, cast

import numpy as np

from common.job import GenerationJob
from common.model_config import ModelConfig
from deployments.model.families.base import Row, TickCache
from deployments.model.families.derived import DerivedPipelines
from deployments.model.families.flow_match import FlowRow
from deployments.model.families.flux.tiny import TINY_FLUX, ensure_tiny_flux
from deployments.model.families.loading import load_pipeline, to_uint8
from deployments.model.families.packed_flow import PackedFlowFamily
from deployments.model.lora.parse import LoadedAdapter, parse_adapter, split_prefix

if TYPE_CHECKING:
    import torch

FLUX_PIPELINES = {"img2img": "FluxImg2ImgPipeline", "inpaint": "FluxInpaintPipeline"}
# FLUX's 16 latent channels -> RGB (the linear factors preview UIs use for FLUX.1).
FLUX_LATENT_RGB = (
    (-0.0346, 0.0244, 0.0681), (0.0034, 0.0210, 0.0687), (0.0275, -0.0668, -0.0433),
    (-0.0174, 0.0160, 0.0617), (0.0859, 0.0721, 0.0329), (0.0004, 0.0383, 0.0115),
    (0.0405, 0.0861, 0.0915), (-0.0236, -0.0185, -0.0259), (-0.0245, 0.0250, 0.1180),
    (0.1008, 0.0755, -0.0421), (-0.0515, 0.0201, 0.0011), (0.0428, -0.0012, -0.0036),
    (0.0817, 0.0765, 0.0749), (-0.1264, -0.0522, -0.1103), (-0.0280, -0.0881, -0.0499),
    (-0.1262, -0.0982, -0.0778),
)  # fmt: skip
FLUX_LATENT_RGB_BIAS = (-0.0329, -0.0718, -0.0851)


@dataclass(eq=False)
class FluxPrompt:
    """One request's conditioning: T5 token embeddings, the pooled CLIP embedding."""

    embeds: torch.Tensor  # (1, L, D)
    pooled: torch.Tensor  # (1, P)
    text_ids: torch.Tensor  # (L, 3)


class FluxFamily(PackedFlowFamily):
    """A loaded ``FluxPipeline`` and its step primitives."""

    name: ClassVar[str] = "flux"
    latent_rgb = FLUX_LATENT_RGB
    latent_rgb_bias = FLUX_LATENT_RGB_BIAS
    demo_loras: ClassVar[tuple[str, ...]] = (
        "flux-demo-1",
        "flux-demo-2",
        "flux-demo-3",
        "flux-demo-4",
    )

    def __init__(self, config: ModelConfig) -> None:
        self.config = config
        self.torch_threads = config.threads()
        self.pin_threads()
        self.pipe = load_pipeline(config, "FluxPipeline", {TINY_FLUX: ensure_tiny_flux})
        self.device = self.pipe.device
        self.pipelines = DerivedPipelines(self.pipe, FLUX_PIPELINES)
        self.max_sequence_length = min(512, int(self.pipe.tokenizer_2.model_max_length))
        self._image_ids: dict[tuple[int, int], Any] = {}

    def check(self, job: GenerationJob) -> None:
        self.refuse_what_flow_cannot_do(job)

    # -- admission --------------------------------------------------------------

    def admit(self, job: GenerationJob, owner: Any) -> list[Row]:
        import torch

        pipe = self.pipe
        with torch.inference_mode():
            embeds, pooled, text_ids = pipe.encode_prompt(
                prompt=job.prompt,
                prompt_2=None,
                device=self.device,
                num_images_per_prompt=1,
                max_sequence_length=self.max_sequence_length,
            )
            prompt = FluxPrompt(embeds, pooled, text_ids)
            rows: list[Row] = []
            for index, seed in enumerate(job.seeds):
                generator = torch.Generator("cpu").manual_seed(seed)
                rows.append(self._row(job, owner, index, generator, prompt))
        return rows

    def admit_many(self, requests: Sequence[tuple[GenerationJob, Any]]) -> list[Any]:
        """Several requests admitted in one round: one ``encode_prompt`` over all their
        prompts; each request's rows (or its exception) in order."""
        import torch

        out: list[Any] = []
        with torch.inference_mode():
            embeds, pooled, text_ids = self.pipe.encode_prompt(
                prompt=[job.prompt for job, _ in requests],
                prompt_2=None,
                device=self.device,
                num_images_per_prompt=1,
                max_sequence_length=self.max_sequence_length,
            )
            for i, (job, owner) in enumerate(requests):
                prompt = FluxPrompt(embeds[i : i + 1], pooled[i : i + 1], text_ids)
                try:
                    out.append(
                        [
                            self._row(
                                job, owner, index, torch.Generator("cpu").manual_seed(seed), prompt
                            )
                            for index, seed in enumerate(job.seeds)
                        ]
                    )
                except Exception as exc:  # noqa: BLE001 - fails only this request
                    out.append(exc)
        return out

    def _row(
        self, job: GenerationJob, owner: Any, index: int, generator: Any, prompt: FluxPrompt
    ) -> FlowRow:
        from diffusers.pipelines.flux.pipeline_flux import calculate_shift

        pipe, h, w = self.pipe, job.gen_height, job.gen_width
        channels = pipe.transformer.config.in_channels // 4
        dtype = prompt.embeds.dtype
        row = self.new_row(job, owner, index, prompt, calculate_shift)
        if job.mode == "txt2img":
            row.scheduler.set_begin_index(0)
            row.latents, _ = pipe.prepare_latents(
                1, channels, h, w, dtype, self.device, generator, None
            )
            return row
        return self.start_from_image(row, job, generator, channels, dtype)

    # -- a tick -------------------------------------------------------------------

    def predict(self, rows: Sequence[Row], cache: TickCache | None) -> list[Any]:
        import torch

        mine = cast(Sequence[FlowRow], rows)
        first = mine[0]
        transformer = self.pipe.transformer
        with torch.inference_mode():
            latents = torch.cat([row.latents for row in mine])
            timestep = torch.stack([row.timestep for row in mine]).to(latents.dtype)
            guidance = None
            if transformer.config.guidance_embeds:
                guidance = torch.tensor(
                    [row.guidance for row in mine], device=latents.device, dtype=torch.float32
                )
            prompts = [cast(FluxPrompt, row.prompt) for row in mine]
            noise = transformer(
                hidden_states=latents,
                timestep=timestep / 1000,
                guidance=guidance,
                pooled_projections=torch.cat([p.pooled for p in prompts]),
                encoder_hidden_states=torch.cat([p.embeds for p in prompts]),
                txt_ids=prompts[0].text_ids,
                img_ids=self._grid_ids(first.height, first.width, latents.dtype),
                return_dict=False,
            )[0]
        return [noise[i : i + 1] for i in range(len(mine))]

    def _grid_ids(self, height: int, width: int, dtype: Any) -> Any:
        key = (height, width)
        ids = self._image_ids.get(key)
        if ids is None:
            scale = self.pipe.vae_scale_factor
            h, w = 2 * (height // (scale * 2)), 2 * (width // (scale * 2))
            ids = self.pipe._prepare_latent_image_ids(1, h // 2, w // 2, self.device, dtype)
            self._image_ids[key] = ids
        return ids

    def decode(self, rows: Sequence[Row]) -> tuple[np.ndarray, np.ndarray]:
        import torch

        self.keep_latents(rows)  # the hires fix's latent upscale
        vae = self.pipe.vae
        with torch.inference_mode():
            latents = self.unpacked(rows)
            latents = latents / vae.config.scaling_factor + vae.config.shift_factor
            image = vae.decode(latents.to(vae.dtype), return_dict=False)[0]
            images = self.pipe.image_processor.postprocess(image, output_type="np")
        return to_uint8(images)

    def parse_lora(self, path: Path, name: str) -> LoadedAdapter:
        """PEFT, kohya, XLabs and other FLUX layouts, via ``FluxPipeline.lora_state_dict``."""
        return parse_adapter(path, name, self.pipe.transformer, _read_flux_keys, "FLUX")


def _read_flux_keys(raw: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any], int]:
    from diffusers import FluxPipeline

    result = FluxPipeline.lora_state_dict(raw, return_alphas=True)
    state, alphas = (result[0], result[1]) if isinstance(result, tuple) else (result, None)
    mine, ignored = split_prefix(state, "transformer.", ("text_encoder.", "text_encoder_2."))
    return mine, dict(alphas or {}), ignored
