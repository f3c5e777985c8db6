"""A1111's hires fix on the model replica: a txt2img pass, an upscale, an img2img pass.

``GenerationJob.hires`` asks for it. The first pass runs as any txt2img request; its
images are upscaled to the second pass's generation size (``lanczos``, ``nearest``, or
for A1111's ``Latent`` modes a bicubic upscale of the decoded image, which the second
pass encodes back to latents) and each is the init image of one img2img request with
the hires strength, steps and scheduler, at the image's own seed. The passes' events
(progress, previews) are relayed; only the second pass's images are the final.
If the first pass was interrupted (``Submission.finish_now``), its images are the
answer, as in A1111.
"""

from __future__ import annotations

import contextlib
import dataclasses
from collections.abc import AsyncIterator, Callable

import numpy as np
from PIL import Image

from common.job import GenerationJob, HiresSpec, ImageEvent
from deployments.model.scheduler.submission import Submission

Run = Callable[[Submission], AsyncIterator[ImageEvent]]
RESAMPLE = {
    "latent": Image.Resampling.BICUBIC,
    "lanczos": Image.Resampling.LANCZOS,
    "nearest": Image.Resampling.NEAREST,
    "none": Image.Resampling.LANCZOS,
}


def upscaled(pixels: np.ndarray, hires: HiresSpec) -> list[np.ndarray]:
    """Each ``(H, W, 3)`` uint8 image resized to the second pass's generation size."""
    size, method = (hires.width, hires.height), RESAMPLE[hires.upscaler]
    return [np.asarray(Image.fromarray(image).resize(size, method)) for image in pixels]


def second_pass(job: GenerationJob, seed: int, init: np.ndarray) -> GenerationJob:
    hires = job.hires
    assert hires is not None
    return dataclasses.replace(
        job,
        seeds=(seed,),
        gen_width=hires.width,
        gen_height=hires.height,
        steps=hires.steps,
        scheduler=hires.scheduler or job.scheduler,
        mode="img2img",
        init_image=init,
        strength=hires.strength,
        partial_images=0,
        hires=None,
    )


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
    assert job.hires is not None
    first = Submission(dataclasses.replace(job, hires=None), stream=sub.stream)
    finals: list[np.ndarray] = []
    async for event in _relay(run, first, finals):
        yield event
    if first.finish_now or not finals:  # interrupted: the image as it stands
        yield ImageEvent("final", finals[0] if finals else None)
        return
    images: list[np.ndarray] = []
    stopped = False
    for seed, init in zip(job.seeds, upscaled(finals[0], job.hires), strict=True):
        if stopped:  # interrupted: the rest stay as the first pass left them
            images.append(init)
            continue
        again = Submission(second_pass(job, seed, init), stream=sub.stream)
        done: list[np.ndarray] = []
        async for event in _relay(run, again, done):
            yield event
        images.append(done[0][0])
        stopped = again.finish_now
    yield ImageEvent("final", np.stack(images))
