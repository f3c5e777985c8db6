"""Cheap previews of partially denoised latents, for streamed partial images.

A fixed linear projection from SDXL's 4 latent channels to RGB, instead of the VAE:
it costs a matrix multiply at latent resolution (1/8 of the image side), needs no
extra weights or download, and is what preview UIs use for SDXL. Only the final
image goes through the full VAE. A tiny autoencoder (TAESD) would give sharper
previews at the price of another model to ship; it is not wired in.
"""

from __future__ import annotations

from typing import Any

import numpy as np

# Least-squares fit of SDXL latents to RGB in [-1, 1] (the factors ComfyUI and others
# use for SDXL previews); rows are latent channels, columns R, G, B.
SDXL_LATENT_RGB = (
    (0.3651, 0.4232, 0.4341),
    (-0.2533, -0.0042, 0.1068),
    (0.1076, 0.1111, -0.0362),
    (-0.3165, -0.2492, -0.2188),
)
SDXL_LATENT_RGB_BIAS = (0.1084, -0.0175, -0.0011)


def current_sigma(scheduler: Any) -> float:
    """Noise level of the latents the scheduler just produced (0 when unknown)."""
    sigmas = getattr(scheduler, "sigmas", None)
    index = getattr(scheduler, "step_index", None)
    if sigmas is None or index is None or index >= len(sigmas):
        return 0.0
    return float(sigmas[index])


def latents_to_rgb(latents: Any, scheduler: Any = None) -> np.ndarray:
    """``(B, 4, h, w)`` latents -> ``(B, h, w, 3)`` uint8 previews."""
    import torch

    if latents.shape[1] != len(SDXL_LATENT_RGB):
        raise ValueError(f"previews need 4 latent channels, got {latents.shape[1]}")
    with torch.no_grad():
        x = latents.float()
        sigma = current_sigma(scheduler) if scheduler is not None else 0.0
        x = x / (sigma**2 + 1.0) ** 0.5  # bring noisy latents back to unit scale
        factors = torch.tensor(SDXL_LATENT_RGB, dtype=x.dtype, device=x.device)
        bias = torch.tensor(SDXL_LATENT_RGB_BIAS, dtype=x.dtype, device=x.device)
        rgb = torch.einsum("bchw,cr->bhwr", x, factors) + bias
        rgb = ((rgb + 1.0) / 2.0).clamp(0.0, 1.0)
        return (rgb * 255.0).round().to(torch.uint8).cpu().numpy()
