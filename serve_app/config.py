"""Typed application config: the ``args`` block of ``serve_config.yaml``.

Config models forbid unknown keys, so a typo fails at startup instead of being
ignored. Ray's own ``AutoscalingConfig`` silently accepts unknown keys and
``min_replicas > max_replicas``; :class:`DeploymentOptions` checks both.
"""

from __future__ import annotations

import re
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from serve_app.protocol import OPENAI_SIZES
from serve_app.sizes import SDXL_BUCKETS, scaled_bucket


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
    """``@serve.batch`` limits; both can be changed live through ``user_config``."""

    max_batch_size: int = Field(default=16, ge=1, description="Images per batch, not requests.")
    batch_wait_timeout_s: float = Field(
        default=0.0,
        ge=0.0,
        description="Extra wait for a batch to fill once the model is free. "
        "Batches already form from what queued while the previous batch ran.",
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


class ModelConfig(StrictModel):
    """One served model: where its weights come from and how it generates."""

    id: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9._:/-]*$")
    aliases: list[str] = Field(default_factory=list)
    source: str = Field(description="'builtin:tiny-sdxl', a hub repo id, or a local folder.")
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
    pipeline: Literal["StableDiffusionXLPipeline"] = "StableDiffusionXLPipeline"
    scheduler: SchedulerConfig | None = None
    performance: PerformanceConfig = Field(default_factory=PerformanceConfig)
    dtype: Literal["float32", "float16", "bfloat16"] = "float32"
    device: Literal["auto", "cpu", "cuda"] = "auto"
    torch_threads: int | None = Field(
        default=None, ge=1, description="Pin torch intra-op threads (determinism on CPU)."
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
    size_multiple: int = Field(default=8, ge=1, description="Generated sides snap to this.")
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
    batching: BatchingConfig = Field(default_factory=BatchingConfig)
    deployment: DeploymentOptions = Field(default_factory=DeploymentOptions)

    @model_validator(mode="after")
    def _check(self) -> ModelConfig:
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

    def deployment_name(self) -> str:
        return "Model:" + re.sub(r"[^A-Za-z0-9_.-]", "_", self.id)


_CREDENTIAL_KEYS = {
    "access_key",
    "access_key_id",
    "aws_access_key_id",
    "secret_key",
    "secret_access_key",
    "aws_secret_access_key",
    "session_token",
    "aws_session_token",
    "credentials",
    "password",
}
_STORE_PREFIX_RE = re.compile(r"^(?:[A-Za-z0-9_-]{1,128}/){0,4}$")


class StorageConfig(StrictModel):
    """Where ``url`` output and imagine images live: a local folder or an S3-compatible bucket.

    Credentials are never part of this config. The S3 backend takes them from boto3's
    default chain: ``AWS_ACCESS_KEY_ID``/``AWS_SECRET_ACCESS_KEY`` in the environment
    (e.g. from a Kubernetes secret), a web identity token (IRSA), or an instance profile.
    """

    kind: Literal["local", "s3"] = "local"
    url_ttl_s: int = Field(
        default=3600,
        ge=1,
        le=7 * 24 * 3600,
        description="Lifetime of image URLs (signed or presigned), as OpenAI's (60 min).",
    )
    # kind: local
    local_dir: str | None = Field(
        default=None, description="Defaults to $IMAGEGEN_CACHE/images (or ~/.cache/...)."
    )
    sweep_interval_s: float = Field(
        default=300.0, gt=0, description="How often expired local outputs are deleted."
    )
    # kind: s3
    bucket: str | None = Field(default=None, min_length=3, max_length=63)
    prefix: str = Field(default="imagegen/", description="Key prefix inside the bucket.")
    endpoint_url: str | None = Field(
        default=None, description="MinIO / GCS interop / moto; unset for AWS S3."
    )
    public_endpoint_url: str | None = Field(
        default=None,
        description="Endpoint written into presigned URLs when clients reach the store at "
        "another address than the servers do (e.g. an in-cluster MinIO service).",
    )
    region: str | None = None
    addressing_style: Literal["auto", "virtual", "path"] = "auto"
    manage_lifecycle: bool = Field(
        default=True,
        description="Install a bucket lifecycle rule that expires url outputs. Turn off "
        "where the operator manages lifecycle (e.g. GCS, which has its own format).",
    )

    @model_validator(mode="before")
    @classmethod
    def _no_credentials(cls, data: Any) -> Any:
        if isinstance(data, dict):
            found = sorted(k for k in data if str(k).lower() in _CREDENTIAL_KEYS)
            if found:
                raise ValueError(
                    f"storage credentials ({found}) do not belong in serve_config.yaml; set "
                    "AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY in the environment "
                    "(e.g. from a Kubernetes secret)"
                )
        return data

    @field_validator("prefix")
    @classmethod
    def _check_prefix(cls, value: str) -> str:
        value = value.strip("/")
        value = f"{value}/" if value else ""
        if not _STORE_PREFIX_RE.match(value):
            raise ValueError(
                f"prefix {value!r} must be up to 4 segments of letters, digits, '_' or '-'"
            )
        return value

    @model_validator(mode="after")
    def _check_kind(self) -> StorageConfig:
        s3_only = ("bucket", "endpoint_url", "public_endpoint_url", "region")
        if self.kind == "s3" and self.bucket is None:
            raise ValueError("storage kind 's3' needs a bucket")
        if self.kind == "local":
            misplaced = [name for name in s3_only if getattr(self, name) is not None]
            if misplaced:
                raise ValueError(f"{misplaced} only apply to storage kind 's3'")
        elif self.local_dir is not None:
            raise ValueError("local_dir only applies to storage kind 'local'")
        return self


class ApiKeysConfig(StrictModel):
    """Bearer API keys for the OpenAI-style routes (``serve_app/auth.py``).

    Keys are read from ``keys_env`` (comma-separated) or ``keys_file`` (a mounted
    secret: one key per line, ``#`` comments). No keys found: auth is off, unless
    ``required``, which makes a missing key a startup error.
    """

    keys_env: str | None = Field(
        default="IMAGEGEN_API_KEYS",
        description="Environment variable with comma-separated keys. Unset or empty: no auth.",
    )
    keys_file: str | None = Field(default=None, description="A file with one key per line.")
    required: bool = Field(default=False, description="Refuse to start without any key.")


class CorsConfig(StrictModel):
    """Cross-origin requests from browsers; off (no CORS headers) while allow_origins is empty."""

    allow_origins: list[str] = Field(default_factory=list)
    allow_methods: list[str] = Field(default_factory=lambda: ["GET", "POST", "DELETE"])
    allow_headers: list[str] = Field(
        default_factory=lambda: ["authorization", "content-type", "x-request-id"]
    )
    allow_credentials: bool = False
    max_age_s: int = Field(default=600, ge=0)


class IngressConfig(StrictModel):
    max_body_bytes: int = Field(default=1 << 20, ge=1024)
    request_timeout_s: float = Field(default=300.0, gt=0)
    public_base_url: str | None = Field(
        default=None, description="Base for image URLs; defaults to the request's own host."
    )
    api_keys: ApiKeysConfig = Field(default_factory=ApiKeysConfig)
    cors: CorsConfig = Field(default_factory=CorsConfig)
    deployment: DeploymentOptions = Field(
        default_factory=lambda: DeploymentOptions(max_ongoing_requests=256)
    )


class EncoderConfig(StrictModel):
    deployment: DeploymentOptions = Field(
        default_factory=lambda: DeploymentOptions(max_ongoing_requests=32)
    )


class A1111Config(StrictModel):
    """The AUTOMATIC1111 routes (``/sdapi/v1/...``): auth and per-client options."""

    enabled: bool = True
    auth_env: str | None = Field(
        default="IMAGEGEN_A1111_AUTH",
        description="Environment variable holding 'user:password[,user:password...]' "
        "(A1111's --api-auth format). Unset or empty: no auth.",
    )
    auth_file: str | None = Field(
        default=None, description="A file holding the same, e.g. a mounted secret."
    )
    options_dir: str | None = Field(
        default=None,
        description="Where per-client options (sd_model_checkpoint) are kept, shared by "
        "every ingress replica on the node. Default: $IMAGEGEN_CACHE/a1111-options.",
    )


class ImageInputConfig(StrictModel):
    """Images sent in (edits, variations, Together ``image_url``, A1111 img2img)."""

    max_upload_bytes: int = Field(
        default=50 * 1024 * 1024,
        ge=1024,
        description="Cap on a request body carrying images (multipart or JSON with base64 "
        "or data: URLs); 413 past it. Other JSON bodies keep ingress.max_body_bytes.",
    )
    max_input_pixels: int = Field(
        default=4096 * 4096, ge=64 * 64, description="Cap on one decoded image's width*height."
    )
    max_input_images: int = Field(default=16, ge=1, le=16, description="Images per request.")
    fetch_timeout_s: float = Field(default=10.0, gt=0, description="Whole image_url fetch.")
    fetch_max_bytes: int = Field(default=20 * 1024 * 1024, ge=1024)
    fetch_max_redirects: int = Field(default=3, ge=0, le=10)
    fetch_allowlist: list[str] = Field(
        default_factory=list,
        description="Hosts (exact names) or IP networks (CIDR) image_url may reach even "
        "though they are private, loopback or link-local. Empty: public addresses only.",
    )
    img2img_strength: float = Field(default=0.75, gt=0.0, le=1.0)
    inpaint_strength: float = Field(default=1.0, gt=0.0, le=1.0)
    variation_strength: float = Field(default=0.6, gt=0.0, le=1.0)

    @field_validator("fetch_allowlist")
    @classmethod
    def _check_allowlist(cls, value: list[str]) -> list[str]:
        import ipaddress

        for entry in value:
            if "/" in entry:
                ipaddress.ip_network(entry, strict=False)  # raises ValueError with the reason
            elif not re.fullmatch(r"[A-Za-z0-9.:-]+", entry):
                raise ValueError(f"fetch_allowlist entry {entry!r} is not a host or network")
        return value


class ImageServingArgs(StrictModel):
    """The whole application: models, encoder, ingress, storage."""

    models: list[ModelConfig] = Field(min_length=1)
    default_model: str | None = Field(
        default=None, description="Id or alias; first model if unset."
    )
    ingress: IngressConfig = Field(default_factory=IngressConfig)
    encoder: EncoderConfig = Field(default_factory=EncoderConfig)
    storage: StorageConfig = Field(default_factory=StorageConfig)
    a1111: A1111Config = Field(default_factory=A1111Config)
    images: ImageInputConfig = Field(default_factory=ImageInputConfig)

    @model_validator(mode="after")
    def _unique_names(self) -> ImageServingArgs:
        seen: dict[str, str] = {}
        for model in self.models:
            for name in (model.id, *model.aliases):
                if name in seen:
                    raise ValueError(
                        f"model name {name!r} is used by both {seen[name]!r} and {model.id!r}"
                    )
                seen[name] = model.id
        if self.default_model is not None and self.default_model not in seen:
            raise ValueError(f"default_model {self.default_model!r} is not a configured model")
        return self

    def model_names(self) -> dict[str, str]:
        """Every id and alias -> the id it serves."""
        return {name: m.id for m in self.models for name in (m.id, *m.aliases)}

    def resolve_default(self) -> str:
        if self.default_model is None:
            return self.models[0].id
        return self.model_names()[self.default_model]
