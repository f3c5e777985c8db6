"""AUTOMATIC1111 API request bodies: every field of A1111's
``StableDiffusionTxt2ImgProcessingAPI`` and ``StableDiffusionImg2ImgProcessingAPI``
(``modules/api/models.py``, built from ``StableDiffusionProcessing*``'s arguments).

Pure pydantic. A1111 builds these models with FastAPI, whose schema errors are 422s;
every field there is ``Optional``, and a JSON ``null`` here is the field's default
(``common.errors.validate`` drops it). What each field does on this server (honoured,
ignored, refused) is the dialect's business: ``dialects/a1111_fields.py``.
"""

from __future__ import annotations

import types
import typing
from typing import Any

from pydantic import Field, model_validator

from serve_app.protocol.openai import MAX_SEED, Scheduled


def _numeric(annotation: Any) -> bool:
    """An int or float field (optional or not) that is not also a bool field."""
    args = set(typing.get_args(annotation)) if isinstance(annotation, types.UnionType) else set()
    kinds = args or {annotation}
    return bool(kinds & {int, float}) and bool not in kinds


class Txt2ImgRequest(Scheduled):
    """A1111's ``StableDiffusionTxt2ImgProcessingAPI``."""

    @model_validator(mode="before")
    @classmethod
    def _no_booleans_for_numbers(cls, data: Any) -> Any:
        """Lax types (A1111 clients send "20" for 20), but a JSON boolean is never a
        number: ``"steps": true`` is a 400, not one step."""
        if isinstance(data, dict):
            for name, field in cls.model_fields.items():
                if isinstance(data.get(name), bool) and _numeric(field.annotation):
                    raise ValueError(f"{name} must be a number, not a boolean")
        return data

    prompt: str = ""
    negative_prompt: str = ""
    styles: list[str] = Field(default_factory=list)
    seed: int = Field(default=-1, ge=-1, le=MAX_SEED, description="-1: random.")
    subseed: int = -1
    subseed_strength: float = 0.0
    seed_resize_from_h: int = -1
    seed_resize_from_w: int = -1
    seed_enable_extras: bool = True
    sampler_name: str | None = None
    sampler_index: str | None = None
    scheduler: str | None = None
    batch_size: int = Field(default=1, ge=1, le=10)
    n_iter: int = Field(default=1, ge=1, le=10)
    steps: int | None = Field(default=None, ge=1)
    cfg_scale: float | None = Field(default=None, ge=0.0, le=50.0)
    distilled_cfg_scale: float | None = None
    width: int = Field(default=512, ge=64)
    height: int = Field(default=512, ge=64)
    restore_faces: bool | None = None
    tiling: bool | None = None
    do_not_save_samples: bool = False
    do_not_save_grid: bool = False
    eta: float | None = None
    denoising_strength: float | None = Field(default=None, ge=0.0, le=1.0)
    s_min_uncond: float | None = None
    s_churn: float | None = None
    s_tmax: float | None = None
    s_tmin: float | None = None
    s_noise: float | None = None
    override_settings: dict[str, Any] = Field(default_factory=dict)
    override_settings_restore_afterwards: bool = True
    refiner_checkpoint: str | None = None
    refiner_switch_at: float | None = None
    disable_extra_networks: bool = False
    firstpass_image: str | None = None
    comments: dict[str, Any] | None = None
    # Hires fix (txt2img only in A1111; accepted on img2img bodies too).
    enable_hr: bool = False
    firstphase_width: int = 0
    firstphase_height: int = 0
    hr_scale: float = 2.0
    hr_upscaler: str | None = None
    hr_second_pass_steps: int = 0
    hr_resize_x: int = 0
    hr_resize_y: int = 0
    hr_checkpoint_name: str | None = None
    hr_additional_modules: list[str] | None = None
    hr_sampler_name: str | None = None
    hr_scheduler: str | None = None
    hr_prompt: str = ""
    hr_negative_prompt: str = ""
    hr_cfg: float | None = None
    hr_distilled_cfg: float | None = None
    force_task_id: str | None = None
    script_name: str | None = None
    script_args: list[Any] = Field(default_factory=list)
    send_images: bool = True
    save_images: bool = False
    alwayson_scripts: dict[str, Any] = Field(default_factory=dict)
    infotext: str | None = None


class Img2ImgRequest(Txt2ImgRequest):
    """A1111's ``StableDiffusionImg2ImgProcessingAPI``: txt2img's fields plus these."""

    init_images: list[str] = Field(min_length=1)
    resize_mode: int = Field(default=0, ge=0, le=3)
    denoising_strength: float = Field(default=0.75, ge=0.0, le=1.0)  # type: ignore[assignment]
    image_cfg_scale: float | None = None
    mask: str | None = None
    mask_blur_x: int = 4
    mask_blur_y: int = 4
    mask_blur: int | None = None
    mask_round: bool = True
    inpainting_fill: int = 0
    inpaint_full_res: bool = True
    inpaint_full_res_padding: int = 0
    inpainting_mask_invert: int = Field(default=0, ge=0, le=1)
    initial_noise_multiplier: float | None = None
    latent_mask: str | None = None
    include_init_images: bool = False
