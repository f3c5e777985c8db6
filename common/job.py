"""The canonical request every dialect translates into, and what crosses the handles.

Only these plain dataclasses (and uint8 numpy arrays) travel between the ingress, the
model deployment and the encoder: no Starlette requests, no PIL objects. Pixels go
from the model to the encoder only; the ingress gets ``EncodedImage``s back.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass, field
from typing import Any, Literal

from common.formats import OutputFormat

# txt2img: from noise; img2img: from an init image; inpaint: repaint where a mask says.
Mode = Literal["txt2img", "img2img", "inpaint"]

# Who is waiting for the images (docs/scheduler.md#priority): a person (interactive,
# the default for sync and streamed requests) or nobody (batch, async jobs' default).
Priority = Literal["interactive", "batch"]
PRIORITIES: tuple[Priority, ...] = ("interactive", "batch")

# Random seeds are drawn below 2**32 so every client (A1111 uses 32-bit seeds) can replay them.
RANDOM_SEED_LIMIT = 2**32


@dataclass(frozen=True)
class LoraRef:
    """One LoRA adapter a request applies, by its resolved name, at ``scale``.

    The name is what the model replica's adapter registry knows (a file stem in
    ``loras.dirs``, a hub reference or a URL the ingress has checked). Every image
    row of a request carries its request's adapters; rows with different adapters
    may share one UNet call (the delta is applied per row inside each adapted layer).
    """

    name: str
    scale: float = 1.0


@dataclass(frozen=True)
class SchedulerSpec:
    """A diffusers scheduler to swap in for one call: class name plus config overrides.

    Built from a config, never imported here: the ingress stays free of diffusers.
    ``options`` is a sorted tuple of ``(key, value)`` pairs so the spec is hashable.
    """

    class_name: str
    options: tuple[tuple[str, bool | int | float | str], ...] = ()

    def config(self) -> dict[str, bool | int | float | str]:
        return dict(self.options)


HiresUpscaler = Literal["latent", "lanczos", "nearest", "none"]
# ``torch.nn.functional.interpolate`` modes of A1111's ``Latent`` upscalers.
LatentMode = Literal["bilinear", "bicubic", "nearest", "nearest-exact"]


@dataclass(frozen=True)
class HiresSpec:
    """A1111's hires fix: after the first pass, upscale each image to ``width`` x
    ``height`` (the second pass's generation size) and run img2img on it with
    ``strength`` over ``steps`` steps, all on the model replica.

    ``upscaler`` "latent" interpolates the first pass's latents (``latent_mode``,
    ``antialias``: A1111's ``Latent (...)`` variants) and the second pass starts from
    them; the others resize the decoded image, which the second pass encodes again.
    """

    width: int
    height: int
    upscaler: HiresUpscaler
    strength: float
    steps: int
    scheduler: SchedulerSpec | None = None
    latent_mode: LatentMode = "bilinear"
    antialias: bool = False


@dataclass(frozen=True, eq=False)
class LatentStart:
    """The hires fix's second pass from latents: the first pass's ``(1, C, h, w)``
    latents of one image (the denoiser's latent space), which the model replica
    interpolates to the second pass's latent grid with ``mode`` and ``antialias``."""

    latents: Any = field(repr=False)
    mode: LatentMode
    antialias: bool


@dataclass(frozen=True)
class GenerationJob:
    """What the model deployment needs to produce ``len(seeds)`` images."""

    request_id: str
    prompt: str
    negative_prompt: str | None
    seeds: tuple[int, ...]
    gen_width: int
    gen_height: int
    steps: int
    guidance: float
    mode: Mode = "txt2img"
    # None: the model's configured scheduler.
    scheduler: SchedulerSpec | None = None
    # DeepCache: recompute the UNet's deep features every N steps (None or 1: every step).
    cache_interval: int | None = None
    # LoRA adapters for every image of this job (empty: the base model alone).
    loras: tuple[LoraRef, ...] = ()
    # Previews to stream while denoising (0-3); only set for stream=true requests.
    partial_images: int = 0
    # Streamed requests only: a "progress" event after every denoising step (async jobs).
    report_progress: bool = False
    # With report_progress: the named Ray actor the model asks after each step whether
    # this request should finish now with its images as they stand (A1111 interrupt).
    control: str | None = None
    # txt2img only: a second, img2img pass on the upscaled images (A1111 enable_hr).
    hires: HiresSpec | None = None
    # img2img / inpaint: the init image as (gen_height, gen_width, 3) uint8, already
    # resized to the generation size by the ingress; for inpaint also a
    # (gen_height, gen_width) uint8 mask, 255 where to repaint. ``strength`` is the
    # fraction of the schedule that runs (diffusers' ``strength``).
    init_image: Any = field(default=None, compare=False, repr=False)
    mask: Any = field(default=None, compare=False, repr=False)
    strength: float | None = None
    # img2img on the model replica only (the hires fix's latent upscale): start from
    # these latents instead of an encoded init image. Never crosses a handle.
    init_latents: LatentStart | None = field(default=None, compare=False, repr=False)
    # Step mode's admission order: the class, then the deadline (a Unix time; None:
    # none) among equals. Neither changes the call, so neither is in ``shape_key``.
    priority: Priority = "interactive"
    deadline_at: float | None = None

    def __post_init__(self) -> None:
        needs_image = self.mode != "txt2img"
        has_image = self.init_image is not None or self.init_latents is not None
        if needs_image != has_image or needs_image != (self.strength is not None):
            raise ValueError(f"mode {self.mode!r} and init_image/strength do not agree")
        latent_start = self.init_latents is not None
        if latent_start and (self.mode != "img2img" or self.init_image is not None):
            raise ValueError("init_latents is an img2img start in place of init_image")
        if (self.mode == "inpaint") != (self.mask is not None):
            raise ValueError(f"mode {self.mode!r} and mask do not agree")
        if self.hires is not None and self.mode != "txt2img":
            raise ValueError("a hires pass follows txt2img only")
        if self.init_image is not None:
            expected = (self.gen_height, self.gen_width, 3)
            if self.init_image.shape != expected or self.init_image.dtype.name != "uint8":
                raise ValueError(f"init_image must be {expected} uint8")
            if self.mask is not None and self.mask.shape != expected[:2]:
                raise ValueError(f"mask must be {expected[:2]} uint8")

    @property
    def n(self) -> int:
        return len(self.seeds)

    @property
    def deep_cache_interval(self) -> int | None:
        """The interval that changes the call: an interval of 1 reuses nothing, like None."""
        return None if self.cache_interval in (None, 1) else self.cache_interval

    @property
    def shape_key(self) -> tuple[object, ...]:
        """Jobs with equal keys can share one pipeline call: everything here changes the call."""
        return (
            self.gen_width,
            self.gen_height,
            self.steps,
            self.guidance,
            self.mode,
            self.scheduler,
            self.deep_cache_interval,
            self.strength,
        )


@dataclass(frozen=True, eq=False)
class Overlay:
    """Inpainting: paste the original back outside the mask, at the output size.

    ``image`` is ``(height, width, 3)`` uint8 and ``mask`` ``(height, width)`` uint8
    with 255 where the model repaints, both at the spec's output size.
    """

    image: Any
    mask: Any


@dataclass(frozen=True)
class EncodeSpec:
    """How the encoder turns one job's pixels into the response's images."""

    request_id: str
    width: int
    height: int
    output_format: OutputFormat
    compression: int | None
    # "stored": write image i at store_keys[i] and report its key (imagine images).
    response_format: Literal["b64_json", "url", "stored"]
    base_url: str | None = None
    store_keys: tuple[str, ...] = ()
    overlay: Overlay | None = field(default=None, compare=False, repr=False)
    # PNG only: A1111's ``parameters`` text chunk for image i (empty: none written).
    png_text: tuple[str, ...] = field(default=(), repr=False)


@dataclass(frozen=True)
class EncodedImage:
    b64_json: str | None = None
    url: str | None = None
    key: str | None = None
    byte_size: int = 0


@dataclass(frozen=True)
class ImageEvent:
    """One item of a generation stream: previews at a step, or the finished images.

    Inside the model replica ``pixels`` is a ``(n, H, W, C)`` uint8 array (``None`` for
    errors and progress); partial pixels are at latent resolution. What crosses the
    handle to the ingress carries ``images`` instead, encoded by the encoder
    deployment, and ``pixels`` is ``None``: arrays never travel through the ingress.
    """

    kind: Literal["partial", "final", "error", "progress"]
    pixels: Any
    partial_index: int | None = None
    # For kind "progress": denoising step ``step`` of ``total_steps`` is done.
    step: int | None = None
    total_steps: int | None = None
    # For kind "error": why this request failed (the others in its batch go on).
    error: BaseException | None = None
    # For kind "final" in step mode: how long the request's rows were paused for
    # interactive work (preemption, docs/scheduler.md#priority).
    paused_ms: float = 0.0
    # For "partial" and "final" as they reach the ingress: the encoded images.
    images: tuple[EncodedImage, ...] = ()


@dataclass
class BatchStats:
    """Counters a model replica reports through ``stats()``."""

    batches: int = 0
    images: int = 0
    requests: int = 0
    pipeline_calls: int = 0
    batch_size_histogram: dict[int, int] = field(default_factory=dict)
    streaming_requests: int = 0
    # Batches holding both streamed and non-streamed requests.
    mixed_batches: int = 0
    partial_images_sent: int = 0
    cancelled_requests: int = 0
    # Images of cancelled requests removed from a running pipeline call, and the
    # denoising steps that removal saved.
    dropped_images: int = 0
    steps_saved: int = 0
    # Failed pipeline calls retried one request at a time, and requests that failed.
    split_batches: int = 0
    failed_requests: int = 0

    def record(self, requests: int, images: int, calls: int, streaming: int) -> None:
        self.batches += 1
        self.requests += requests
        self.images += images
        self.pipeline_calls += calls
        self.streaming_requests += streaming
        if 0 < streaming < requests:
            self.mixed_batches += 1
        self.batch_size_histogram[images] = self.batch_size_histogram.get(images, 0) + 1


def partial_steps(total_steps: int, count: int) -> list[int]:
    """Evenly spaced step numbers (1-based, before the last step) to send previews at.

    Fewer than ``count`` come back when there are too few steps to space them.
    """
    steps = {round((i + 1) * total_steps / (count + 1)) for i in range(count)}
    return sorted(step for step in steps if 1 <= step < total_steps)


def assign_seeds(n: int, seed: int | None, increment: int = 1) -> tuple[int, ...]:
    """Image *i* uses ``seed + i * increment``; without a seed each image draws its own."""
    if seed is None:
        return tuple(secrets.randbelow(RANDOM_SEED_LIMIT) for _ in range(n))
    return tuple(seed + i * increment for i in range(n))
