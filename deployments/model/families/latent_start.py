"""img2img from latents: the hires fix's ``Latent`` upscalers, as A1111 runs them.

A1111's ``Latent`` hires upscalers never leave latent space: the first pass's latents
are resized with ``torch.nn.functional.interpolate`` (bilinear, bicubic, nearest or
nearest-exact, with or without antialias) to the second pass's latent grid, and the
second pass is img2img from them: noise at the strength's first timestep, then its
steps. Here:

1. the hires fix's first pass is a row owner that keeps latents (:class:`KeepsLatents`,
   ``deployments/model/hires.py``); a family's ``decode`` hands it each row's final
   latents, ``(1, C, h, w)`` unpacked, before decoding them (:func:`keep_final_latents`);
2. the second pass's job carries one image's latents as ``GenerationJob.init_latents``;
3. the family, preparing that row where it would encode an init image, takes
   :func:`upscaled_latents` instead. diffusers' img2img pipelines take latents in place
   of an image (a tensor with the latent channel count skips the VAE encode), so the
   noise is added with the row's own generator and scheduler exactly as for an image.

All of it runs on the pipeline thread (torch stays off the replica's event loop).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, Protocol, runtime_checkable

from common.job import LatentStart
from deployments.model.families.base import Row


@runtime_checkable
class KeepsLatents(Protocol):
    """A row owner that wants its rows' final latents, by image index."""

    final_latents: dict[int, Any]


def keep_final_latents(rows: Sequence[Row], latents_of: Callable[[Row], Any]) -> None:
    """Give each row's final ``(1, C, h, w)`` latents to an owner that keeps them."""
    for row in rows:
        if isinstance(row.owner, KeepsLatents):
            row.owner.final_latents[row.index] = latents_of(row).detach().clone()


def upscaled_latents(start: LatentStart, height: int, width: int, dtype: Any) -> Any:
    """``start``'s latents interpolated to an ``height`` x ``width`` latent grid."""
    import torch

    latents = start.latents
    if tuple(latents.shape[-2:]) == (height, width):
        return latents.to(dtype)
    with torch.inference_mode():
        resized = torch.nn.functional.interpolate(
            latents.float(), size=(height, width), mode=start.mode, antialias=start.antialias
        )
    return resized.to(dtype)
