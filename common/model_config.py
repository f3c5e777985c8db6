"""Typed config for models and for every deployment's Serve options.

How a model is loaded, batched, tuned and deployed (:class:`ModelConfig`), and the
``Deployment.options`` every deployment takes (:class:`DeploymentOptions`). The rest
of the app's config, and the whole ``args`` block, is in :mod:`common.config`.

Config models forbid unknown keys, so a typo fails at startup instead of being
ignored. Ray's own ``AutoscalingConfig`` silently accepts unknown keys and
``min_replicas > max_replicas``; :class:`DeploymentOptions` checks both.
"""

from __future__ import annotations

import re
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from common.families import FamilyName, check_family, infer_family
from common.sizes import OPENAI_SIZES, SDXL_BUCKETS, latent_pixels, scaled_bucket


class StrictModel(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class DeploymentOptions(StrictModel):
    """Options passed to ``Deployment.options(...)`` for one deployment."""

    num_replicas: int | None = Field(default=None, ge=0)
    autoscaling_config: dict[str, Any] | None = None
    max_ongoing_requests: int | None = Field(default=None, ge=1)
    max_queued_requests: int | None = Field(default=None, ge=-1)
    ray_actor_options: dict[str, Any] | None = None
    health_check_period_s: float | None = Field(default=None, gt=0)
    backpressure_config: dict[str, Any] | None = Field(
        default=None,
        description="Serve's answer when max_queued_requests is full and the proxy "
        "rejects (the ingress): {status_code: 503 | 429, retry_after_s}.",
    )
    graceful_shutdown_timeout_s: float | None = Field(default=None, ge=0)

    @field_validator("autoscaling_config")
    @classmethod
    def _check_autoscaling(cls, value: dict[str, Any] | None) -> dict[str, Any] | None:
        if value is None:
            return None
        from ray.serve.config import AutoscalingConfig

        unknown = sorted(set(value) - set(AutoscalingConfig.model_fields))
        if unknown:
            raise ValueError(f"unknown autoscaling_config keys: {unknown}")
        parsed = AutoscalingConfig(**value)
        if parsed.min_replicas > parsed.max_replicas:
            raise ValueError(
                f"autoscaling_config min_replicas ({parsed.min_replicas}) is greater "
                f"than max_replicas ({parsed.max_replicas})"
            )
        return value

    @field_validator("backpressure_config")
    @classmethod
    def _check_backpressure(cls, value: dict[str, Any] | None) -> dict[str, Any] | None:
        if value is not None:
            from ray.serve.config import BackpressureConfig

            BackpressureConfig(**value)  # forbids unknown keys, checks the status code
        return value

    @model_validator(mode="after")
    def _one_scaling_mode(self) -> DeploymentOptions:
        if self.num_replicas is not None and self.autoscaling_config is not None:
            raise ValueError("set either num_replicas or autoscaling_config, not both")
        return self

    def to_serve_options(self) -> dict[str, Any]:
        return self.model_dump(exclude_none=True)

    def scales_to_zero(self) -> bool:
        """Whether the deployment may have no replica at all while idle."""
        if self.autoscaling_config is not None:
            return self.autoscaling_config.get("min_replicas", 1) == 0
        return self.num_replicas == 0


class BatchingConfig(StrictModel):
    """How a model replica batches images (docs/scheduler.md).

    ``max_batch_size`` and ``batch_wait_timeout_s`` can be changed live through
    ``user_config``; ``mode`` is fixed when the replica starts.
    """

    mode: Literal["step", "request"] = Field(
        default="step",
        description="step: requests join and leave the running batch between denoising "
        "steps (continuous batching). request: one pipeline call per batch of requests "
        "(@serve.batch behind an admission gate), kept as the benchmark baseline.",
    )
    max_batch_size: int = Field(
        default=16,
        ge=1,
        description="Images per batch, not requests. In step mode: the row budget, the "
        "most images being denoised at once.",
    )
    batch_wait_timeout_s: float = Field(
        default=0.0,
        ge=0.0,
        description="Request mode only: extra wait for a batch to fill once the model is "
        "free. Batches already form from what queued while the previous batch ran.",
    )
    # Step mode's scheduler (docs/scheduler.md#priority). The model's ``scheduler``
    # block is the diffusers noise scheduler, so these live here.
    order: Literal["priority", "fcfs"] = Field(
        default="priority",
        description="Step mode: 'priority' admits interactive requests first, pauses batch "
        "rows for them at step boundaries, and orders each class by deadline; 'fcfs' admits "
        "in arrival order and never pauses (the benchmark baseline).",
    )
    max_batch_latent_pixels: int | None = Field(
        default=None,
        ge=1,
        description="Step mode: the compute budget, rows x latent height x latent width of "
        "everything being denoised at once (latents are 1/8 of the image per side). "
        "Unset: max_batch_size images at the model's 1024x1024 generation size.",
    )
    max_batch_wait_s: float = Field(
        default=60.0,
        gt=0,
        description="Step mode, priority order: a batch request that has waited this long "
        "(queued or paused) goes ahead of every class and is never paused again.",
    )


class PerformanceConfig(StrictModel):
    """Speed switches for real checkpoints on a GPU (each off by default).

    Attention already uses PyTorch's scaled-dot-product kernels (diffusers' default
    with torch >= 2), so there is no switch for it.
    """

    channels_last: bool = Field(
        default=False, description="UNet and VAE in channels_last memory format."
    )
    compile_unet: bool = Field(
        default=False,
        description="torch.compile the UNet (dynamic shapes: batches vary). Startup pays "
        "the compile; not combinable with cache_interval (DeepCache patches the UNet).",
    )
    vae_slicing: bool = Field(default=False, description="Decode a batch one image at a time.")
    vae_tiling: bool = Field(default=False, description="Decode large images in tiles.")


class SchedulerConfig(StrictModel):
    """Swap the checkpoint's scheduler, e.g. trailing Euler for SDXL-Lightning."""

    class_name: str = Field(pattern=r"^[A-Za-z0-9_]+Scheduler$")
    config: dict[str, Any] = Field(default_factory=dict)


class LoraConfig(StrictModel):
    """LoRA adapters a request may apply to this model (``docs/loras.md``).

    Adapters are applied per image row inside the UNet (never fused), so requests
    with different adapters share one batch.
    """

    enabled: bool = True
    dirs: list[str] = Field(
        default_factory=list,
        description="Folders whose *.safetensors files are adapters named by file stem. "
        "Empty: $IMAGEGEN_CACHE/loras.",
    )
    max_loaded: int = Field(default=8, ge=1, description="Adapters kept on the device (LRU).")
    max_per_request: int = Field(default=4, ge=1, le=16)
    min_scale: float = Field(default=-4.0, ge=-100.0)
    max_scale: float = Field(default=4.0, le=100.0)
    max_file_bytes: int = Field(
        default=1 << 30, ge=1024, description="Cap on one adapter file (local, hub or URL)."
    )
    allow_urls: bool = Field(
        default=True,
        description="Adapters by http(s) URL, fetched by the ingress under the image_url "
        "address rules (images.fetch_allowlist) and max_file_bytes.",
    )
    demo_adapters: bool = Field(
        default=True,
        description="For builtin:tiny-sdxl, write the built-in demo adapters (demo-1 to "
        "demo-4, built in code) into the first LoRA folder at startup.",
    )

    @model_validator(mode="after")
    def _check_range(self) -> LoraConfig:
        if self.min_scale > self.max_scale:
            raise ValueError(f"loras min_scale {self.min_scale} > max_scale {self.max_scale}")
        return self


class ModelConfig(StrictModel):
    """One served model: where its weights come from and how it generates."""

    id: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9._:/-]*$")
    aliases: list[str] = Field(default_factory=list)
    source: str = Field(
        description="'builtin:tiny-sdxl' (or tiny-flux, tiny-qwen-image), a hub repo id, "
        "or a local folder."
    )
    family: FamilyName | None = Field(
        default=None,
        description="sdxl | flux | qwen_image. Inferred from the source when left out "
        "(model_index.json's _class_name); a mismatch is a startup error.",
    )
    revision: str | None = None
    variant: str | None = None
    local_files_only: bool = Field(
        default=False, description="Never reach the hub; load from the local cache only."
    )
    unet_weights: str | None = Field(
        default=None,
        description="A UNet state dict (.safetensors) replacing the checkpoint's: a local "
        "path or 'hf://<repo>/<file>', e.g. SDXL-Lightning's 4-step UNet.",
    )
    scheduler: SchedulerConfig | None = None
    performance: PerformanceConfig = Field(default_factory=PerformanceConfig)
    dtype: Literal["float32", "float16", "bfloat16"] = "float32"
    device: Literal["auto", "cpu", "cuda"] = "auto"
    torch_threads: int | None = Field(
        default=None,
        ge=1,
        description="Torch intra-op threads of the replica. Unset: the replica's "
        "ray_actor_options.num_cpus rounded down (at least 1), so torch and Ray's own "
        "processes do not oversubscribe a node; on GPU replicas it only feeds the CPU side.",
    )
    default_steps: int = Field(default=30, ge=1)
    max_steps: int = Field(default=100, ge=1)
    default_guidance: float = Field(default=5.0, ge=0.0)
    max_images_per_request: int = Field(default=10, ge=1, le=10)
    max_prompt_chars: int = Field(default=4000, ge=1)
    buckets: dict[str, tuple[int, int]] = Field(default_factory=lambda: dict(SDXL_BUCKETS))
    generation_scale: float = Field(
        default=1.0, gt=0.0, le=1.0, description="Generate buckets scaled by this factor."
    )
    size_multiple: int = Field(
        default=8,
        ge=1,
        description="Generated sides snap to this (16 by default for flux and qwen_image).",
    )
    max_pixels: int = Field(
        default=2_097_152,
        ge=64 * 64,
        description="Cap on width*height for free sizes (Together, A1111): 2 MP by default.",
    )
    max_side: int = Field(default=2048, ge=64, description="Cap on either side of a free size.")
    max_pixels_per_request: int = Field(
        default=20_971_520,
        ge=64 * 64,
        description="Cap on n * width * height of the output images of one request.",
    )
    warmup: bool = True
    cold_start_retry_after_s: int = Field(
        default=10,
        ge=1,
        description="Retry-After sent with the 503 when this model is scaled to zero, "
        "cold-starting, and its queue (max_queued_requests) is full.",
    )
    cold_start_timeout_s: float = Field(
        default=120.0,
        gt=0,
        description="A scale-to-zero model whose replica is not running this long after a "
        "request woke it (the cluster cannot place it) answers 503 with Retry-After and "
        "the resources it lacks, instead of waiting for the request deadline.",
    )
    batching: BatchingConfig = Field(default_factory=BatchingConfig)
    loras: LoraConfig = Field(default_factory=LoraConfig)
    deployment: DeploymentOptions = Field(default_factory=DeploymentOptions)

    @model_validator(mode="before")
    @classmethod
    def _family_defaults(cls, data: Any) -> Any:
        """Flow families pack 2x2 latent patches: their sides default to multiples of 16."""
        if isinstance(data, dict) and "size_multiple" not in data and "source" in data:
            family = data.get("family") or infer_family(str(data["source"]))
            if family in ("flux", "qwen_image"):
                data = {**data, "size_multiple": 16}
        return data

    @model_validator(mode="after")
    def _check(self) -> ModelConfig:
        family = self.known_family()  # a family that contradicts the source fails here
        if family in ("flux", "qwen_image") and self.size_multiple % 16:
            raise ValueError(
                f"model {self.id!r}: the {family} family packs 2x2 latent patches after an "
                f"8x VAE, so size_multiple must be a multiple of 16 (got {self.size_multiple})"
            )
        missing = [size for size in OPENAI_SIZES if size not in self.buckets]
        if missing:
            raise ValueError(f"model {self.id!r}: buckets lack sizes {missing}")
        if self.default_steps > self.max_steps:
            raise ValueError(f"model {self.id!r}: default_steps > max_steps")
        if self.max_images_per_request > self.batching.max_batch_size:
            raise ValueError(
                f"model {self.id!r}: max_images_per_request ({self.max_images_per_request}) "
                f"exceeds batching.max_batch_size ({self.batching.max_batch_size}); "
                "one request must fit in one batch"
            )
        ongoing = self.deployment.max_ongoing_requests
        if ongoing is not None and ongoing < self.batching.max_batch_size:
            raise ValueError(
                f"model {self.id!r}: deployment.max_ongoing_requests ({ongoing}) is below "
                f"batching.max_batch_size ({self.batching.max_batch_size}); batches could "
                "never fill"
            )
        return self

    def latent_pixel_budget(self) -> int:
        """Step mode's compute budget in latent pixels (``batching.max_batch_latent_pixels``)."""
        if self.batching.max_batch_latent_pixels is not None:
            return self.batching.max_batch_latent_pixels
        width, height = self.generation_size("1024x1024")
        return self.batching.max_batch_size * latent_pixels(width, height)

    def threads(self) -> int:
        """``torch_threads``, or the replica's CPU reservation rounded down (Serve's
        default reservation is 1 CPU)."""
        if self.torch_threads is not None:
            return self.torch_threads
        options = self.deployment.ray_actor_options or {}
        return max(1, int(float(options.get("num_cpus", 1))))

    def known_family(self) -> FamilyName | None:
        """The family, from the config or from the source without a download (or None)."""
        found = infer_family(self.source)
        if found is None:
            return self.family
        return check_family(self.family, found, self.source)

    def generation_size(self, size: str) -> tuple[int, int]:
        """The (width, height) the pipeline runs at for an OpenAI ``size``."""
        return scaled_bucket(self.buckets[size], self.generation_scale, self.size_multiple)

    def free_generation_size(self, width: int, height: int) -> tuple[int, int]:
        """The (width, height) the pipeline runs at for a free size: snapped down to
        ``size_multiple`` (8) after ``generation_scale``. Check :meth:`free_size_error` first."""
        return scaled_bucket((width, height), self.generation_scale, self.size_multiple)

    def free_size_error(self, width: int, height: int) -> str | None:
        """Why a free ``width`` x ``height`` is out of this model's range, or None."""
        if width > self.max_side or height > self.max_side:
            return f"{width}x{height} has a side over this model's limit of {self.max_side} px"
        if width * height > self.max_pixels:
            return (
                f"{width}x{height} is {width * height} pixels; this model's cap is "
                f"{self.max_pixels} pixels"
            )
        return None

    def allows_hub(self) -> bool:
        """Whether this model may download from the Hugging Face hub (LoRA hub references)."""
        return not self.local_files_only and not self.source.startswith("builtin:")

    def deployment_name(self) -> str:
        return "Model:" + re.sub(r"[^A-Za-z0-9_.-]", "_", self.id)
