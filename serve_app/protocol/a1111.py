"""AUTOMATIC1111 API request bodies (``modules/api/models.py``): the fields that change images.

Pure pydantic. A1111 builds these models with FastAPI, whose schema errors are 422s.
"""

from __future__ import annotations

from typing import Any

from pydantic import Field

from serve_app.protocol.openai import MAX_SEED, LenientModel


class Txt2ImgRequest(LenientModel):
    """A1111's ``StableDiffusionTxt2ImgProcessingAPI`` (the fields that change the images)."""

    prompt: str = ""
    negative_prompt: str = ""
    seed: int = Field(default=-1, ge=-1, le=MAX_SEED, description="-1: random.")
    sampler_name: str | None = None
    sampler_index: str | None = None
    scheduler: str | None = None
    batch_size: int = Field(default=1, ge=1, le=10)
    n_iter: int = Field(default=1, ge=1, le=10)
    steps: int | None = Field(default=None, ge=1)
    cfg_scale: float | None = Field(default=None, ge=0.0, le=50.0)
    width: int = Field(default=512, ge=64)
    height: int = Field(default=512, ge=64)
    override_settings: dict[str, Any] = Field(default_factory=dict)
    enable_hr: bool = False
    script_name: str | None = None
    alwayson_scripts: dict[str, Any] = Field(default_factory=dict)
    send_images: bool = True


class Img2ImgRequest(Txt2ImgRequest):
    """A1111's ``StableDiffusionImg2ImgProcessingAPI`` (the fields that change the images)."""

    init_images: list[str] = Field(min_length=1)
    mask: str | None = None
    denoising_strength: float = Field(default=0.75, ge=0.0, le=1.0)
    inpainting_mask_invert: int = Field(default=0, ge=0, le=1)
    resize_mode: int = Field(default=0, ge=0, le=3)
    include_init_images: bool = False
