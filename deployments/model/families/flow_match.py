"""Per-row flow-matching schedules and row state shared by the transformer families.

FLUX.1 and Qwen-Image (and SD3.5, Z-Image, FLUX.2) denoise with
``FlowMatchEulerDiscreteScheduler`` on sigmas ``linspace(1, 1/steps, steps)``,
shifted by ``mu``, a dynamic shift computed from the image's token count. Each row
gets its own scheduler copy (schedulers keep ``step_index`` per instance) set up the
way the family's diffusers pipeline sets up its one scheduler; img2img and inpaint
start part-way in with ``get_timesteps``, and inpaint rows re-noise their init
latents to the next timestep after every step with ``scale_noise`` and blend them in
outside the mask, exactly as ``Flux/QwenImageInpaintPipeline`` do.

Rows hold *packed* latents ``(1, tokens, channels)``: 2x2 latent patches as tokens.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from deployments.model.families.base import Row

if TYPE_CHECKING:
    import torch


@dataclass(eq=False, kw_only=True)
class FlowRow(Row):
    """One image of a flow-matching family: packed latents and its own scheduler."""

    scheduler: Any
    timesteps: Any  # the timesteps this row runs, in order
    latents: torch.Tensor  # (1, tokens, channels), packed
    height: int  # generation size in pixels
    width: int
    guidance: float
    prompt: Any  # the family's encoded conditioning, shared by a request's rows
    # inpaint: the clean init latents, the noise they were noised with, and the mask.
    image_latents: torch.Tensor | None = None
    noise: torch.Tensor | None = None
    mask: torch.Tensor | None = None

    @property
    def tick_key(self) -> tuple[int, ...]:
        # Position ids come from the latent grid, so rows share a call only when their
        # grids (not just their token counts) are equal.
        return (self.height, self.width, int(self.latents.shape[-1]))

    @property
    def timestep(self) -> Any:
        return self.timesteps[self.position]


def image_seq_len(height: int, width: int, vae_scale_factor: int) -> int:
    """Tokens of a packed latent grid: ``(h / 16) * (w / 16)`` for an 8x VAE."""
    return (height // vae_scale_factor // 2) * (width // vae_scale_factor // 2)


def shift_mu(scheduler: Any, seq_len: int, calculate_shift: Callable[..., float]) -> float:
    """The dynamic shift the pipelines pass as ``mu``, from the scheduler's config."""
    config = scheduler.config
    return calculate_shift(
        seq_len,
        config.get("base_image_seq_len", 256),
        config.get("max_image_seq_len", 4096),
        config.get("base_shift", 0.5),
        config.get("max_shift", 1.15),
    )


def row_scheduler(
    base: Any, steps: int, seq_len: int, device: Any, calculate_shift: Callable[..., float]
) -> Any:
    """A copy of ``base`` with the pipeline's sigmas and ``mu`` set for this row."""
    scheduler = copy.deepcopy(base)
    sigmas = np.linspace(1.0, 1 / steps, steps)
    if getattr(scheduler.config, "use_flow_sigmas", False):
        sigmas = None
    mu = shift_mu(scheduler, seq_len, calculate_shift)
    scheduler.set_timesteps(steps, device=device, sigmas=sigmas, mu=mu)
    return scheduler


def start_at_strength(scheduler: Any, steps: int, strength: float) -> Any:
    """img2img/inpaint: the timesteps that remain at ``strength`` (``get_timesteps``)."""
    init = min(steps * strength, steps)
    start = int(max(steps - init, 0))
    timesteps = scheduler.timesteps[start * scheduler.order :]
    if hasattr(scheduler, "set_begin_index"):
        scheduler.set_begin_index(start * scheduler.order)
    if len(timesteps) < 1:
        raise ValueError(f"strength {strength} leaves no denoising step out of {steps}")
    return timesteps


def step_row(row: FlowRow, prediction: Any) -> None:
    """The row's scheduler step, then the inpaint blend outside the mask."""
    import torch

    with torch.inference_mode():
        row.latents = row.scheduler.step(prediction, row.timestep, row.latents, return_dict=False)[
            0
        ]
        if row.mask is not None and row.image_latents is not None:
            proper = row.image_latents
            if row.position < row.total - 1:
                next_t = row.timesteps[row.position + 1]
                proper = row.scheduler.scale_noise(proper, torch.tensor([next_t]), row.noise)
            row.latents = (1 - row.mask) * proper + row.mask * row.latents
    row.position += 1


def latent_rgb_preview(latents: Any, factors: Any, bias: Any) -> np.ndarray:
    """``(B, C, h, w)`` unpacked latents -> ``(B, h, w, 3)`` uint8 by linear RGB factors.

    The factors map the scaled latents the transformer sees to RGB in [-1, 1]; on a
    noisy latent the preview is noisy too, and it sharpens as the row denoises.
    """
    import torch

    with torch.no_grad():
        x = latents.float()
        factor_t = torch.tensor(factors, dtype=x.dtype, device=x.device)
        bias_t = torch.tensor(bias, dtype=x.dtype, device=x.device)
        rgb = torch.einsum("bchw,cr->bhwr", x, factor_t) + bias_t
        rgb = ((rgb + 1.0) / 2.0).clamp(0.0, 1.0)
        return (rgb * 255.0).round().to(torch.uint8).cpu().numpy()
