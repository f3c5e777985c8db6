"""The Qwen-Image family: a ``QwenImageTransformer2DModel`` step at a time, with true CFG.

One tick is one transformer call over rows of one latent grid. Qwen-Image has no
guidance embedding: ``job.guidance`` is the pipeline's ``true_cfg_scale``. Above 1 a
row takes two batch entries, uncond (the negative prompt, ``""`` when none is given)
then cond, next to each other, and both ride the same call as every other row: text
embeddings of different lengths are right-padded to one length and masked with
``encoder_hidden_states_mask`` (the transformer builds its joint attention mask from
it). The two predictions are combined as ``QwenImagePipeline`` does, with its norm
rescale. Latents are packed 2x2 into 64-channel tokens of a 5-D (frame) latent;
position ids come from the grid, so rows of different sizes never share a call.
Prompt encoding, latent preparation for txt2img, img2img and inpaint, and decoding
call ``QwenImagePipeline``'s (and its img2img and inpaint siblings') own helpers with
the row's own scheduler and generator, so a row gives what diffusers gives alone.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any, ClassVar, cast

import numpy as np

from common.errors import invalid
from common.families import BUILTIN_DEMO_LORAS
from common.job import GenerationJob
from common.model_config import ModelConfig
from deployments.model.families.base import Row, TickCache
from deployments.model.families.derived import DerivedPipelines
from deployments.model.families.flow_match import FlowRow
from deployments.model.families.loading import load_pipeline, to_uint8
from deployments.model.families.packed_flow import PackedFlowFamily
from deployments.model.families.qwen_image.rows import QwenPrompt, encode_job_prompt
from deployments.model.families.qwen_image.tiny import TINY_QWEN_IMAGE, ensure_tiny_qwen_image
from deployments.model.lora.parse import LoadedAdapter, parse_adapter, split_prefix

QWEN_PIPELINES = {"img2img": "QwenImageImg2ImgPipeline", "inpaint": "QwenImageInpaintPipeline"}
# Qwen-Image's VAE latent space is Wan 2.1's: its 16 channels -> RGB (ComfyUI's factors).
QWEN_LATENT_RGB = (
    (-0.1299, -0.1692, 0.2932), (0.0671, 0.0406, 0.0442), (0.3568, 0.2548, 0.1747),
    (0.0372, 0.2344, 0.1420), (0.0313, 0.0189, -0.0328), (0.0296, -0.0956, -0.0665),
    (-0.3477, -0.4059, -0.2925), (0.0166, 0.1902, 0.1975), (-0.0412, 0.0267, -0.1364),
    (-0.1293, 0.0740, 0.1636), (0.0680, 0.3019, 0.1128), (0.0032, 0.0581, 0.0639),
    (-0.1251, 0.0927, 0.1699), (0.0060, -0.0633, 0.0005), (0.3477, 0.2275, 0.2950),
    (0.1984, 0.0913, 0.1861),
)  # fmt: skip
QWEN_LATENT_RGB_BIAS = (-0.1835, -0.0868, -0.3360)
# The one sampler Qwen-Image has: flow-matching Euler (A1111's "Euler").


class QwenImageFamily(PackedFlowFamily):
    """A loaded ``QwenImagePipeline`` and its step primitives."""

    name: ClassVar[str] = "qwen_image"
    latent_rgb = QWEN_LATENT_RGB
    latent_rgb_bias = QWEN_LATENT_RGB_BIAS
    demo_loras: ClassVar[tuple[str, ...]] = BUILTIN_DEMO_LORAS[TINY_QWEN_IMAGE]

    def __init__(self, config: ModelConfig) -> None:
        self.config = config
        self.torch_threads = config.threads()
        self.pin_threads()
        pipe = load_pipeline(config, "QwenImagePipeline", {TINY_QWEN_IMAGE: ensure_tiny_qwen_image})
        if pipe.transformer.config.guidance_embeds:
            raise ValueError(
                f"{config.source}: a guidance-distilled Qwen-Image transformer "
                "(guidance_embeds) is not served; the qwen_image family guides with true CFG"
            )
        self.pipe = pipe
        self.device = pipe.device
        self.pipelines = DerivedPipelines(pipe, QWEN_PIPELINES)

    def check(self, job: GenerationJob) -> None:
        self.refuse_what_flow_cannot_do(job)
        if job.steps < 2 and self.pipe.scheduler.config.get("shift_terminal"):
            raise invalid(
                f"steps={job.steps}: Qwen-Image's schedule is stretched to end at "
                "shift_terminal, which needs at least 2 steps (1 step gives NaN sigmas).",
                param="steps",
                code="unsupported_value",
            )

    # -- admission --------------------------------------------------------------

    def admit(self, job: GenerationJob, owner: Any) -> list[Row]:
        import torch

        with torch.inference_mode():
            prompt = encode_job_prompt(self.pipe, job, self.device)
            rows: list[Row] = []
            for index, seed in enumerate(job.seeds):
                generator = torch.Generator("cpu").manual_seed(seed)
                rows.append(self._row(job, owner, index, generator, prompt))
        return rows

    # -- a tick -------------------------------------------------------------------

    def predict(self, rows: Sequence[Row], cache: TickCache | None) -> list[Any]:
        """Every row's guided prediction from one transformer call (``sum(passes)`` entries)."""
        import torch

        mine = cast(Sequence[FlowRow], rows)
        first = mine[0]
        latents, timesteps, texts = [], [], []
        for row in mine:
            p = cast(QwenPrompt, row.prompt)
            halves = [(p.neg_embeds, p.neg_mask)] if row.passes == 2 else []
            halves.append((p.embeds, p.mask))
            for embeds, mask in halves:
                latents.append(row.latents)
                timesteps.append(row.timestep)
                texts.append((embeds, mask))
        with torch.inference_mode():
            hidden = torch.cat(latents)
            embeds, mask = pad_texts(texts)
            scale = self.pipe.vae_scale_factor * 2
            grid = (1, first.height // scale, first.width // scale)
            noise = self.pipe.transformer(
                hidden_states=hidden,
                timestep=torch.stack(timesteps).to(hidden.dtype) / 1000,
                encoder_hidden_states=embeds,
                encoder_hidden_states_mask=mask,
                img_shapes=[[grid]] * len(latents),
                return_dict=False,
            )[0]
            preds, offset = [], 0
            for row in mine:
                if row.passes == 2:
                    uncond, cond = noise[offset : offset + 1], noise[offset + 1 : offset + 2]
                    preds.append(true_cfg(uncond, cond, row.guidance))
                else:
                    preds.append(noise[offset : offset + 1])
                offset += row.passes
        return preds

    def _row(
        self, job: GenerationJob, owner: Any, index: int, generator: Any, prompt: QwenPrompt
    ) -> FlowRow:
        from diffusers.pipelines.qwenimage.pipeline_qwenimage import calculate_shift

        row = self.new_row(job, owner, index, prompt, calculate_shift)
        row.passes = 2 if prompt.neg_embeds is not None else 1
        channels = self.pipe.transformer.config.in_channels // 4
        dtype = prompt.embeds.dtype
        if job.mode == "txt2img":
            row.scheduler.set_begin_index(0)
            row.latents = self.pipe.prepare_latents(
                1, channels, row.height, row.width, dtype, self.device, generator
            )
            return row
        return self.start_from_image(row, job, generator, channels, dtype)

    def preview_latents(self, unpacked: Any) -> Any:
        return unpacked[:, :, 0]  # the video VAE's single frame

    def decode(self, rows: Sequence[Row]) -> tuple[np.ndarray, np.ndarray]:
        """The pipeline's own decode: de-normalise by ``latents_mean/std``, first frame."""
        import torch

        self.keep_latents(rows)  # the hires fix's latent upscale
        vae = self.pipe.vae
        with torch.inference_mode():
            latents = self.unpacked(rows).to(vae.dtype)
            shape = (1, vae.config.z_dim, 1, 1, 1)
            mean = torch.tensor(vae.config.latents_mean).view(shape).to(latents)
            # The pipeline divides by 1/std (not multiplies by std): the same floats.
            inv_std = 1.0 / torch.tensor(vae.config.latents_std).view(shape).to(latents)
            image = vae.decode(latents / inv_std + mean, return_dict=False)[0][:, :, 0]
            images = self.pipe.image_processor.postprocess(image, output_type="np")
        return to_uint8(images)

    def parse_lora(self, path: Path, name: str) -> LoadedAdapter:
        """PEFT, kohya and ModelScope layouts, via ``QwenImagePipeline.lora_state_dict``."""
        return parse_adapter(path, name, self.pipe.transformer, _read_qwen_keys, "Qwen-Image")


def pad_texts(texts: Sequence[tuple[Any, Any]]) -> tuple[Any, Any]:
    """Batch ``(1, L_i, D)`` embeddings: right-pad to the longest with a padding mask.

    When every entry has the same length and no mask, the batch needs no mask either
    (what the pipeline passes for one prompt).
    """
    import torch

    length = max(int(embeds.shape[1]) for embeds, _ in texts)
    if all(int(e.shape[1]) == length and m is None for e, m in texts):
        return torch.cat([e for e, _ in texts]), None
    padded, masks = [], []
    for embeds, mask in texts:
        size = int(embeds.shape[1])
        valid = torch.ones(1, size, dtype=torch.bool, device=embeds.device)
        if mask is not None:
            valid = mask.to(device=embeds.device, dtype=torch.bool)
        padded.append(torch.nn.functional.pad(embeds, (0, 0, 0, length - size)))
        masks.append(torch.nn.functional.pad(valid, (0, length - size), value=False))
    return torch.cat(padded), torch.cat(masks)


def true_cfg(uncond: Any, cond: Any, scale: float) -> Any:
    """``QwenImagePipeline``'s true CFG: the combination, rescaled to the cond's norm."""
    import torch

    combined = uncond + scale * (cond - uncond)
    cond_norm = torch.norm(cond, dim=-1, keepdim=True)
    combined_norm = torch.norm(combined, dim=-1, keepdim=True)
    return combined * (cond_norm / combined_norm)


def _read_qwen_keys(raw: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any], int]:
    from diffusers import QwenImagePipeline

    # Non-diffusers layouts (kohya lora_unet_*, diffusion_model.*, alphas) are converted
    # here with their alphas folded into the weights, so no alphas come back.
    state = QwenImagePipeline.lora_state_dict(raw)
    mine, ignored = split_prefix(state, "transformer.", ("text_encoder.",))
    return mine, {}, ignored
