"""Typed application config: the ``args`` block of ``serve_config.yaml``.

Models and deployment options live in :mod:`common.model_config`; this module
holds the rest: storage, ingress (API keys, CORS), encoder, A1111, images sent in,
the playground page, and :class:`ImageServingArgs`, the whole block. Unknown keys
are errors everywhere, so a typo fails at startup instead of being ignored.
"""

from __future__ import annotations

import re
from typing import Any, Literal

from pydantic import Field, field_validator, model_validator

from common.model_config import DeploymentOptions, ModelConfig, StrictModel

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
    """Bearer API keys for the OpenAI-style routes (``serve_app/asgi/auth.py``).

    Keys are read from ``keys_env`` (comma-separated) or ``keys_file`` (a mounted
    secret: one key per line, ``#`` comments). No keys found: auth is off, unless
    ``required``, which makes a missing key a startup error. Batch keys (from
    ``batch_keys_env`` or ``batch_keys_file``) are keys too, with ``max_priority``
    batch: their requests are never scheduled as interactive.
    """

    keys_env: str | None = Field(
        default="IMAGEGEN_API_KEYS",
        description="Environment variable with comma-separated keys. Unset or empty: no auth.",
    )
    keys_file: str | None = Field(default=None, description="A file with one key per line.")
    required: bool = Field(default=False, description="Refuse to start without any key.")
    # Keys whose max_priority is batch (docs/scheduler.md#priority): read the same way.
    batch_keys_env: str | None = Field(
        default="IMAGEGEN_BATCH_API_KEYS",
        description="Comma-separated keys limited to the batch class (background work).",
    )
    batch_keys_file: str | None = Field(
        default=None, description="A file with one batch-limited key per line."
    )


class CorsConfig(StrictModel):
    """Cross-origin requests from browsers; off (no CORS headers) while allow_origins is empty."""

    allow_origins: list[str] = Field(default_factory=list)
    allow_methods: list[str] = Field(default_factory=lambda: ["GET", "POST", "DELETE"])
    allow_headers: list[str] = Field(
        default_factory=lambda: [
            "authorization",
            "content-type",
            "x-request-id",
            "x-imagegen-priority",
            "x-request-timeout",
        ]
    )
    allow_credentials: bool = False
    max_age_s: int = Field(default=600, ge=0)


class IngressConfig(StrictModel):
    max_body_bytes: int = Field(default=1 << 20, ge=1024)
    max_concurrent_requests: int | None = Field(
        default=None,
        ge=1,
        description="Requests one ingress replica works on at once; past it a JSON 429 with "
        "Retry-After. Must stay below deployment.max_ongoing_requests, so Serve's proxy "
        "never sheds with its plain-text 503. Unset: 7/8 of max_ongoing_requests.",
    )
    request_timeout_s: float = Field(default=300.0, gt=0)
    public_base_url: str | None = Field(
        default=None, description="Base for image URLs; defaults to the request's own host."
    )
    api_keys: ApiKeysConfig = Field(default_factory=ApiKeysConfig)
    cors: CorsConfig = Field(default_factory=CorsConfig)
    deployment: DeploymentOptions = Field(
        default_factory=lambda: DeploymentOptions(max_ongoing_requests=256)
    )

    @model_validator(mode="after")
    def _admission_below_serve(self) -> IngressConfig:
        ongoing = self.deployment.max_ongoing_requests
        limit = self.max_concurrent_requests
        if limit is not None and ongoing is not None and limit >= ongoing:
            raise ValueError(
                f"ingress.max_concurrent_requests ({limit}) must be below "
                f"ingress.deployment.max_ongoing_requests ({ongoing})"
            )
        return self

    def admission_limit(self) -> int | None:
        """The in-ingress bound on concurrent requests (``None``: unbounded)."""
        if self.max_concurrent_requests is not None:
            return self.max_concurrent_requests
        ongoing = self.deployment.max_ongoing_requests
        return None if ongoing is None else max(1, ongoing - max(1, ongoing // 8))


class WebhookConfig(StrictModel):
    """Signed job webhooks (Standard Webhooks). The secret is read like API keys: from
    ``secret_env`` or ``secret_file`` (a mounted secret), ``whsec_<base64>``. Without a
    secret, requests that name a ``webhook_url`` are refused with a 400."""

    secret_env: str | None = Field(default="IMAGEGEN_WEBHOOK_SECRET")
    secret_file: str | None = None
    timeout_s: float = Field(default=10.0, gt=0, description="One delivery attempt.")
    max_attempts: int = Field(default=6, ge=1, le=20)
    initial_backoff_s: float = Field(default=1.0, gt=0)
    max_backoff_s: float = Field(default=60.0, gt=0)
    max_total_s: float = Field(
        default=600.0, gt=0, description="No attempt starts later than this after the first."
    )


class JobsConfig(StrictModel):
    """Async jobs (``/v1/images/jobs``, ``Prefer: respond-async``), kept in the image store."""

    enabled: bool = True
    max_queued: int = Field(
        default=256, ge=1, description="Unfinished jobs in the whole app; 429 past it."
    )
    max_running: int = Field(
        default=32, ge=1, description="Jobs one ingress replica sends to the models at once."
    )
    queue_timeout_s: float = Field(
        default=1800.0, gt=0, description="How long a job may wait for a full model queue."
    )
    lease_s: float = Field(
        default=30.0, gt=0, description="A job whose lease is this old is taken over."
    )
    max_attempts: int = Field(
        default=3,
        ge=1,
        description="Attempts a job gets (a takeover or a failed model replica starts the "
        "next); past them it is failed with its last error.",
    )
    heartbeat_s: float = Field(default=5.0, gt=0, description="How often leases are renewed.")
    sweep_interval_s: float = Field(default=60.0, gt=0)
    webhooks: WebhookConfig = Field(default_factory=WebhookConfig)

    @model_validator(mode="after")
    def _heartbeat_within_lease(self) -> JobsConfig:
        if self.heartbeat_s * 2 > self.lease_s:
            raise ValueError(
                f"jobs.heartbeat_s ({self.heartbeat_s}) must be at most half of "
                f"jobs.lease_s ({self.lease_s})"
            )
        return self


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


class PlaygroundConfig(StrictModel):
    """The browser playground at ``/`` and ``/playground`` (``serve_app/routes/playground.py``).

    It is static files that call the public API with the visitor's own API key, so it
    grants nothing a client could not do; turn it off where no page should be served.
    """

    enabled: bool = Field(default=True, description="Serve the playground page at / .")


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
    playground: PlaygroundConfig = Field(default_factory=PlaygroundConfig)
    jobs: JobsConfig = Field(default_factory=JobsConfig)

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
