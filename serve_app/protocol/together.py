"""Together AI's ``ImageGenerateParams`` on ``/v1/images/generations``. Pure pydantic."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field, model_validator

from serve_app.protocol.openai import MAX_SEED, Scheduled


class TogetherImageRequest(Scheduled):
    """Together's ``ImageGenerateParams``."""

    prompt: str = Field(min_length=1)
    model: str | None = None
    steps: int | None = Field(default=None, ge=1, description="Default 20.")
    seed: int | None = Field(default=None, ge=0, le=MAX_SEED)
    n: int = Field(default=1, ge=1, le=10)
    width: int = Field(default=1024, ge=64)
    height: int = Field(default=1024, ge=64)
    negative_prompt: str | None = None
    guidance: float | None = Field(default=None, ge=0.0, le=50.0)
    guidance_scale: float | None = Field(default=None, ge=0.0, le=50.0)
    output_format: Literal["jpeg", "png"] = "jpeg"
    response_format: Literal["base64", "b64_json", "url"] = "base64"
    image_url: str | None = Field(
        default=None, description="Init image: an http(s) or data: URL (image-to-image)."
    )
    # Extension: how far the result may move from image_url (default images.img2img_strength).
    strength: float | None = Field(default=None, gt=0.0, le=1.0)
    image_loras: list[dict[str, Any]] | None = None
    reference_images: list[str] | None = None
    disable_safety_checker: bool | None = None

    @model_validator(mode="after")
    def _one_guidance(self) -> TogetherImageRequest:
        both = self.guidance is not None and self.guidance_scale is not None
        if both and self.guidance != self.guidance_scale:
            raise ValueError(
                f"guidance ({self.guidance}) and guidance_scale ({self.guidance_scale}) "
                "are two spellings of one parameter; send one, or the same value"
            )
        if self.seed is not None and self.seed + self.n - 1 > MAX_SEED:
            raise ValueError(f"seed {self.seed} + n - 1 exceeds the largest seed {MAX_SEED}")
        return self

    @property
    def guidance_value(self) -> float | None:
        return self.guidance if self.guidance is not None else self.guidance_scale
