"""The imagine wire models: the SDK's ``ImageRequest`` on ``/v1/images/generations``, and the
imagine images API (``/v1/images/imagine``, Image objects and their listing). Pure pydantic.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, Field, field_validator, model_validator

from common.sizes import parse_size
from serve_app.protocol.openai import MAX_SEED, ImageSize, Scheduled

MAX_NAME_CHARS = 256


class ImagineImageRequest(Scheduled):
    """The imagine SDK's ``ImageRequest`` (``imagine.types.images``)."""

    prompt: str = Field(min_length=1)
    model: str | None = None
    negative_prompt: str | None = "blurry"
    seed: int | None = Field(default=27, ge=0, le=MAX_SEED)
    seed_increment: int | None = Field(default=100, ge=0)
    n: int | None = Field(default=1, ge=1, le=10)
    num_inference_steps: int | None = Field(default=None, ge=1, description="Default 20.")
    size: str | None = "512x512"
    guidance_scale: float | None = Field(default=6.5, ge=0.0, le=50.0)
    cache_interval: int | None = Field(
        default=None, ge=1, le=100, description="DeepCache: full UNet every N steps."
    )
    response_format: Literal["b64_json", "url"] | None = "b64_json"
    stream: bool = False
    loras: list[Any] | None = Field(
        default=None, description='LoRA adapters: [{"name": ..., "scale": 1.0}] (docs/loras.md).'
    )

    @field_validator("size")
    @classmethod
    def _size_shape(cls, value: str | None) -> str | None:
        if value is not None:
            parse_size(value, auto=None)  # the SDK has no "auto"; raises for a bad shape
        return value

    @model_validator(mode="after")
    def _check(self) -> ImagineImageRequest:
        last = (self.seed or 0) + (self.images - 1) * self.increment
        if self.seed is not None and last > MAX_SEED:
            raise ValueError(f"the last image's seed {last} exceeds the largest seed {MAX_SEED}")
        return self

    @property
    def images(self) -> int:
        return self.n or 1

    @property
    def increment(self) -> int:
        return 100 if self.seed_increment is None else self.seed_increment

    @property
    def width_height(self) -> tuple[int, int]:
        return parse_size(self.size or "512x512", auto=None)


class ImagineRequest(Scheduled):
    """``POST /v1/images/imagine``; ``size`` and ``output_format`` are our extensions."""

    name: str = Field(min_length=1, max_length=MAX_NAME_CHARS)
    prompt: str = Field(min_length=1)
    negative_prompt: str | None = None
    seed: int | None = Field(default=None, ge=0, le=MAX_SEED)
    model: str | None = None
    size: ImageSize = "1024x1024"
    output_format: Literal["png", "jpeg", "webp"] = "png"
    loras: list[Any] | None = Field(
        default=None, description='LoRA adapters: [{"name": ..., "scale": 1.0}] (docs/loras.md).'
    )


class ImageObject(BaseModel):
    """An Image object as the API returns it; ``url`` is set only while published."""

    id: str
    name: str
    url: str | None
    width: int
    height: int
    format: str
    size: int = Field(description="Bytes.")
    created_at: str = Field(description="ISO 8601, UTC.")
    seed: int | None = None


class ImageList(BaseModel):
    object: Literal["list"] = "list"
    data: list[ImageObject]
    first_id: str | None
    last_id: str | None
    has_more: bool
