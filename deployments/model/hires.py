"""A1111's hires fix on the model replica: a txt2img pass, an upscale, an img2img pass.

``GenerationJob.hires`` asks for it. The first pass runs as any txt2img request. Each
of its images is then upscaled to the second pass's generation size and is the start
of one img2img request with the hires strength, steps and scheduler, at the image's
own seed:

- ``latent`` (A1111's ``Latent`` modes): the first pass keeps its rows' final latents
  (:class:`FirstPass`; the families hand them over as they decode), and the second
  pass starts from them, interpolated on the latent grid with the spec's mode and
  antialias (``families/latent_start.py``). In request mode (the benchmark
  baseline, no families) no latents come back, and the decoded image is resized
  with the matching PIL filter instead;
- ``lanczos``, ``nearest``, ``none``: the decoded image is resized, and the second
  pass encodes it back to latents.

The passes' events (progress, previews) are relayed; only the second pass's images
are the final. If the first pass was interrupted (``Submission.finish_now``), its
images are the answer, as in A1111; if a second pass was, the images not yet
refined are the first pass's, resized.
"""

from __future__ import annotations

import contextlib
import dataclasses
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from PIL import Image

from common.job import GenerationJob, HiresSpec, ImageEvent, LatentStart
from deployments.model.scheduler.submission import Submission

Run = Callable[[Submission], AsyncIterator[ImageEvent]]
RESAMPLE = {
    "lanczos": Image.Resampling.LANCZOS,
    "nearest": Image.Resampling.NEAREST,
    "none": Image.Resampling.LANCZOS,
}
# The pixel stand-in for a latent mode (request mode; images a stopped pass left).
LATENT_RESAMPLE = {
    "bilinear": Image.Resampling.BILINEAR,
    "bicubic": Image.Resampling.BICUBIC,
    "nearest": Image.Resampling.NEAREST,
    "nearest-exact": Image.Resampling.NEAREST,
}


@dataclass(eq=False)
class FirstPass(Submission):
    """The first pass of a hires fix: its rows' final latents, by image index, are
    kept here as they are decoded (``families/latent_start.py``: ``KeepsLatents``)."""

    final_latents: dict[int, Any] = field(default_factory=dict)


def upscaled(pixels: np.ndarray, hires: HiresSpec) -> list[np.ndarray]:
    """Each ``(H, W, 3)`` uint8 image resized to the second pass's generation size."""
    size = (hires.width, hires.height)
    method = (
        LATENT_RESAMPLE[hires.latent_mode]
        if hires.upscaler == "latent"
        else RESAMPLE[hires.upscaler]
    )
    return [np.asarray(Image.fromarray(image).resize(size, method)) for image in pixels]


def second_pass(job: GenerationJob, seed: int, init: np.ndarray | LatentStart) -> GenerationJob:
    """One image's img2img pass, from a resized image or from latents to interpolate."""
    hires = job.hires
    assert hires is not None
    latents = init if isinstance(init, LatentStart) else None
    return dataclasses.replace(
        job,
        seeds=(seed,),
        gen_width=hires.width,
        gen_height=hires.height,
        steps=hires.steps,
        scheduler=hires.scheduler or job.scheduler,
        mode="img2img",
        init_image=None if latents is not None else init,
        init_latents=latents,
        strength=hires.strength,
        partial_images=0,
        hires=None,
    )


def starts(first: FirstPass, pixels: np.ndarray, hires: HiresSpec) -> list[Any]:
    """Each image's second-pass start: its latents for a latent upscale when the
    first pass kept them, else its resized image."""
    kept = first.final_latents
    if hires.upscaler == "latent" and len(kept) == len(pixels):
        return [LatentStart(kept[i], hires.latent_mode, hires.antialias) for i in range(len(kept))]
    return upscaled(pixels, hires)


async def _relay(run: Run, sub: Submission, finals: list[np.ndarray]) -> AsyncIterator[ImageEvent]:
    async with contextlib.aclosing(run(sub)) as events:
        async for event in events:
            if event.kind == "final":
                finals.append(event.pixels)
            else:
                yield event


async def two_passes(sub: Submission, run: Run) -> AsyncIterator[ImageEvent]:
    """The hires fix for ``sub``: its events, then one final with the second pass's images."""
    job = sub.job
    hires = job.hires
    assert hires is not None
    first = FirstPass(dataclasses.replace(job, hires=None), stream=sub.stream)
    finals: list[np.ndarray] = []
    async for event in _relay(run, first, finals):
        yield event
    if first.finish_now or not finals:  # interrupted: the image as it stands
        yield ImageEvent("final", finals[0] if finals else None)
        return
    images: list[np.ndarray] = []
    stopped = False
    begins = starts(first, finals[0], hires)
    for index, seed in enumerate(job.seeds):
        if stopped:  # interrupted: the rest stay as the first pass left them, resized
            images.append(upscaled(finals[0][index : index + 1], hires)[0])
            continue
        again = Submission(second_pass(job, seed, begins[index]), stream=sub.stream)
        done: list[np.ndarray] = []
        async for event in _relay(run, again, done):
            yield event
        images.append(done[0][0])
        stopped = again.finish_now
    yield ImageEvent("final", np.stack(images))
