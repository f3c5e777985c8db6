"""OpenAI Images wire models: requests, responses and errors. Pure pydantic.

Names follow openai-python (``ImagesResponse``, ``ImageData``, ``ErrorObject``) so the
official SDK parses what we send. Request models accept unknown fields: newer SDKs
keep adding parameters, and the ingress logs the ones it ignores.
"""

from __future__ import annotations

import json
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from common.formats import OutputFormat
from common.job import Priority
from common.sizes import OPENAI_SIZES

ImageSize = Literal[OPENAI_SIZES]  # type: ignore[valid-type]
ResponseFormat = Literal["url", "b64_json"]
Background = Literal["transparent", "opaque", "auto"]

# Accepted for compatibility; a diffusion model has no use for them (see docs/api/openai.md).
IGNORED_OPENAI_FIELDS = ("quality", "style", "moderation", "user")
MAX_SEED = 2**63 - 1


class LenientModel(BaseModel):
    """Base for request bodies: unknown fields are kept (and reported), never rejected."""

    model_config = ConfigDict(extra="allow")

    def unknown_fields(self) -> list[str]:
        return sorted((self.model_extra or {}).keys())


class Scheduled(LenientModel):
    """A request body of any dialect: it may name its scheduling class."""

    priority: Priority | None = Field(
        default=None,
        description="Scheduling class: 'interactive' (the default for synchronous and "
        "streamed requests) or 'batch' (the default for async jobs). Also the "
        "X-Imagegen-Priority header; see docs/scheduler.md#priority.",
    )


class OpenAIImageParams(Scheduled):
    """What OpenAI's generate and edit requests share, plus our diffusion extensions."""

    model: str | None = Field(
        default=None, description="Model id or alias; default model if unset."
    )
    n: int = Field(default=1, ge=1, le=10, description="Number of images, 1-10.")
    response_format: ResponseFormat | None = Field(
        default=None,
        description="Unset: 'url' for dall-e-2 and dall-e-3, 'b64_json' otherwise (as OpenAI).",
    )
    output_format: OutputFormat = "png"
    output_compression: int | None = Field(default=None, ge=0, le=100)
    background: Background = "auto"
    quality: str | None = None
    style: str | None = None
    moderation: str | None = None
    user: str | None = None
    stream: bool = False
    partial_images: int | None = Field(default=None, ge=0, le=3)
    # Extensions understood by diffusion models.
    negative_prompt: str | None = None
    seed: int | None = Field(default=None, ge=0, le=MAX_SEED)
    num_inference_steps: int | None = Field(default=None, ge=1)
    guidance_scale: float | None = Field(default=None, ge=0.0, le=50.0)
    sampler: str | None = Field(
        default=None,
        description="An A1111 sampler name (model card: capabilities.samplers); "
        "unset: the model's configured scheduler.",
    )
    loras: list[Any] | None = Field(
        default=None,
        description='LoRA adapters: [{"name": ..., "scale": 1.0}] (docs/loras.md); '
        "checked by the dialect so errors name loras[i].name.",
    )


class ImageRef(LenientModel):
    """An input image of a JSON-body edit: ``{"image_url": ...}`` (a URL or a data URL)."""

    image_url: str | None = None
    file_id: str | None = None


class ImageGenerateRequest(OpenAIImageParams):
    """``POST /v1/images/generations``: OpenAI ``ImageGenerateParams`` plus extensions."""

    prompt: str = Field(min_length=1, description="What to draw.")
    size: str = Field(
        default="auto",
        description="auto (1024x1024), an OpenAI size, or a free WxH by gpt-image-2's rules "
        "(sides multiples of 16, longest side at most 3840, aspect at most 3:1).",
    )

    @model_validator(mode="after")
    def _cross_field_rules(self) -> ImageGenerateRequest:
        if self.background == "transparent" and self.output_format == "jpeg":
            raise ValueError(
                "background='transparent' needs an output_format with alpha "
                "('png' or 'webp'), got output_format='jpeg'"
            )
        if self.seed is not None and self.seed + self.n - 1 > MAX_SEED:
            raise ValueError(f"seed {self.seed} + n - 1 exceeds the largest seed {MAX_SEED}")
        return self


class ImageEditRequest(OpenAIImageParams):
    """The form fields of an edit (files apart); also variations, with ``prompt`` empty."""

    prompt: str = Field(default="", description="What to change; required for edits.")
    size: str = Field(default="auto", description="auto, an OpenAI size, or a free WxH.")
    input_fidelity: Literal["high", "low"] | None = None
    # Extension: img2img strength (overrides input_fidelity and the configured default).
    strength: float | None = Field(default=None, gt=0.0, le=1.0)

    @field_validator("loras", mode="before")
    @classmethod
    def _loras_form_field(cls, value: Any) -> Any:
        """A multipart form carries ``loras`` as a JSON string."""
        if isinstance(value, str):
            try:
                return json.loads(value)
            except json.JSONDecodeError:
                raise ValueError(
                    'loras must be a JSON list like [{"name": "demo-1", "scale": 0.8}]'
                ) from None
        return value

    @model_validator(mode="after")
    def _seed_range(self) -> ImageEditRequest:
        if self.seed is not None and self.seed + self.n - 1 > MAX_SEED:
            raise ValueError(f"seed {self.seed} + n - 1 exceeds the largest seed {MAX_SEED}")
        return self


class ImageEditJSONRequest(ImageEditRequest):
    """``POST /v1/images/edits`` with a JSON body: images and mask by ``image_url``."""

    images: list[ImageRef] = Field(min_length=1, description='[{"image_url": ...}]')
    mask: ImageRef | None = None


class ImageData(BaseModel):
    """One generated image; ``seed`` is our extension so clients can reproduce it."""

    b64_json: str | None = None
    url: str | None = None
    revised_prompt: str | None = None
    seed: int | None = None


class InputTokensDetails(BaseModel):
    image_tokens: int = 0
    text_tokens: int = 0


class ImageUsage(BaseModel):
    """OpenAI's image ``usage`` (``ImagesResponse.usage``, the completed stream event's)."""

    input_tokens: int
    input_tokens_details: InputTokensDetails
    output_tokens: int
    total_tokens: int


class ImagesResponse(BaseModel):
    created: int
    data: list[ImageData]
    background: Literal["transparent", "opaque"] | None = None
    output_format: OutputFormat | None = None
    quality: str | None = None
    size: str | None = None
    usage: ImageUsage | None = None


class ImageStreamEvent(BaseModel):
    """What every streamed image event carries."""

    type: str
    b64_json: str
    background: Literal["transparent", "opaque"]
    created_at: int
    output_format: OutputFormat
    quality: str | None = None
    size: str
    # Extension: which of the request's n images this event belongs to.
    image_index: int = 0


class ImageGenPartialImageEvent(ImageStreamEvent):
    """SSE ``image_generation.partial_image``: a preview while the image forms."""

    type: str = "image_generation.partial_image"
    partial_image_index: int


class ImageGenCompletedEvent(ImageStreamEvent):
    """SSE ``image_generation.completed``: one per finished image."""

    type: str = "image_generation.completed"
    usage: ImageUsage | None = None
    # Extensions: the image's seed, its scheduling class, and how long the step scheduler
    # paused it for interactive work (docs/scheduler.md#priority).
    seed: int | None = None
    priority: Priority | None = None
    paused_ms: float | None = None


class FreeSizeLimits(BaseModel):
    """The free ``width`` x ``height`` a model takes (edits, Together, imagine, A1111)."""

    max_side: int
    max_pixels: int
    multiple: int


class ModelCapabilities(BaseModel):
    """Extension: what a client needs to build a valid request for this model
    (the playground's form reads it); each value is the configured limit."""

    default_steps: int
    max_steps: int
    default_guidance: float
    max_images: int
    sizes: list[str]
    free_size: FreeSizeLimits
    samplers: list[str]


class ModelCard(BaseModel):
    id: str
    object: Literal["model"] = "model"
    created: int
    owned_by: str = "imagegen-serve"
    # Extension: for an alias, the configured model it resolves to.
    root: str | None = None
    capabilities: ModelCapabilities | None = None
    # Extension: whether requests may name LoRA adapters for this model (docs/loras.md).
    supports_loras: bool | None = None
    # Extension: the architecture (sdxl, flux, qwen_image; docs/families.md).
    family: str | None = None


class ModelList(BaseModel):
    object: Literal["list"] = "list"
    data: list[ModelCard]


def dump(model: BaseModel) -> dict[str, Any]:
    """Serialize a response model without ``None`` fields, as OpenAI does."""
    return model.model_dump(exclude_none=True)
