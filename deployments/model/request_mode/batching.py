"""Split a batch of jobs into pipeline calls: one call per shape.

One diffusers call takes one width, height, step count, guidance value, scheduler,
DeepCache interval, mode (txt2img, img2img, inpaint) and strength, so a batch is
grouped by the job's shape key. Init images and masks travel per image row. Jobs with
and without a negative prompt are kept apart too: SDXL treats "no negative
prompt" as zero embeddings, and an empty-string stand-in would change those
images depending on their batch mates.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from common.job import GenerationJob, LoraRef, SchedulerSpec


@dataclass
class GenerationGroup:
    """Images that one pipeline call produces, with where each one belongs."""

    width: int
    height: int
    steps: int
    guidance: float
    mode: str
    scheduler: SchedulerSpec | None = None
    cache_interval: int | None = None
    prompts: list[str] = field(default_factory=list)
    negative_prompts: list[str] | None = None
    seeds: list[int] = field(default_factory=list)
    # (job index in the batch, image index within that job), one per image.
    owners: list[tuple[int, int]] = field(default_factory=list)
    # img2img / inpaint: strength, and per image row its init image (and mask).
    strength: float | None = None
    init_images: list[Any] | None = None
    masks: list[Any] | None = None
    # Per image row, its request's LoRA adapters (rows with different adapters share
    # the call: the delta is applied per row, deployments/model/lora.py).
    loras: list[tuple[LoraRef, ...]] = field(default_factory=list)

    @property
    def size(self) -> int:
        return len(self.seeds)

    @property
    def denoising_steps(self) -> int:
        """Steps the pipeline loop really runs: img2img starts ``strength`` of the way
        from the end of the schedule (diffusers' ``get_timesteps``)."""
        if self.strength is None:
            return self.steps
        return min(int(self.steps * self.strength), self.steps)


class HasImageCount(Protocol):
    @property
    def n(self) -> int: ...


def count_images(jobs: Sequence[HasImageCount]) -> int:
    """``batch_size_fn`` for ``@serve.batch``: the batch limit counts images."""
    return sum(job.n for job in jobs)


def group_jobs(jobs: Sequence[GenerationJob]) -> list[GenerationGroup]:
    """Group every image of every job by shape, keeping first-seen order."""
    groups: dict[tuple[object, ...], GenerationGroup] = {}
    for job_index, job in enumerate(jobs):
        has_negative = job.negative_prompt is not None
        key = (*job.shape_key, has_negative)
        group = groups.get(key)
        if group is None:
            group = GenerationGroup(
                width=job.gen_width,
                height=job.gen_height,
                steps=job.steps,
                guidance=job.guidance,
                mode=job.mode,
                scheduler=job.scheduler,
                cache_interval=job.deep_cache_interval,
                negative_prompts=[] if has_negative else None,
                strength=job.strength,
                init_images=None if job.init_image is None else [],
                masks=None if job.mask is None else [],
            )
            groups[key] = group
        for image_index, seed in enumerate(job.seeds):
            group.prompts.append(job.prompt)
            if group.negative_prompts is not None:
                group.negative_prompts.append(job.negative_prompt or "")
            group.seeds.append(seed)
            group.owners.append((job_index, image_index))
            group.loras.append(job.loras)
            if group.init_images is not None:
                group.init_images.append(job.init_image)
            if group.masks is not None:
                group.masks.append(job.mask)
    return list(groups.values())
