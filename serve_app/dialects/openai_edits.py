"""OpenAI image edits and variations: form fields -> canonical img2img / inpaint job.

``POST /v1/images/edits`` (``ImageEditParams``) and ``POST /v1/images/variations``
(``ImageCreateVariationParams``) arrive as multipart forms, so every value is a
string; pydantic's lax mode turns ``"2"`` into ``2`` and ``"true"`` into ``True``.

Strength (the share of the denoising schedule that runs, so how far the result may
move from the input): ``strength`` if sent (extension), else ``input_fidelity``
``high`` -> 0.5, else the configured default (img2img 0.75, inpaint 1.0,
variations 0.6). ``input_fidelity: low`` is the default.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

import numpy as np

from common.config import ImageInputConfig
from common.errors import invalid, validate
from common.job import EncodedImage, EncodeSpec, GenerationJob, Overlay, assign_seeds
from common.model_config import ModelConfig
from common.sizes import parse_size
from serve_app.dialects.base import free_size
from serve_app.dialects.openai import check_against_model, images_response
from serve_app.dialects.samplers import resolve_sampler
from serve_app.inputs.uploads import InputImage, mask_from_alpha, with_init_image
from serve_app.protocol.openai import (
    IGNORED_OPENAI_FIELDS,
    OPENAI_SIZES,
    ImageEditRequest,
    ImageGenerateRequest,
)

logger = logging.getLogger("imagegen.edits")

HIGH_FIDELITY_STRENGTH = 0.5
# size=auto picks the OpenAI size closest to the input's aspect ratio, as gpt-image-1 does.
AUTO_SIZES = ("1024x1024", "1536x1024", "1024x1536")
FILE_FIELDS = ("image", "image[]", "mask")


def parse_fields(fields: dict[str, Any], variation: bool) -> ImageEditRequest:
    req = validate(ImageEditRequest, fields)
    if not variation and not req.prompt:
        raise invalid(
            "Missing required parameter: 'prompt'.", "prompt", "missing_required_parameter"
        )
    if variation and req.prompt:
        raise invalid("Variations take no prompt; use /v1/images/edits.", "prompt")
    return req


def output_and_generation_size(
    req: ImageEditRequest, model: ModelConfig, image: InputImage
) -> tuple[tuple[int, int], tuple[int, int]]:
    """(output size, generation size) for the request's ``size`` and the input image."""
    size = req.size.strip().lower()
    if size == "auto":
        width, height = image.size
        size = min(AUTO_SIZES, key=lambda s: abs(np.log(_ratio(s)) - np.log(width / height)))
    if size in OPENAI_SIZES:
        return parse_size(size), model.generation_size(size)
    width_s, sep, height_s = size.partition("x")
    if not (sep and width_s.isdigit() and height_s.isdigit()):
        raise invalid(
            f"Invalid size '{req.size}': use auto, one of {list(OPENAI_SIZES[1:])} "
            "or WIDTHxHEIGHT.",
            "size",
            "invalid_size",
        )
    width, height = int(width_s), int(height_s)
    if width < 64 or height < 64:
        raise invalid(f"Invalid size '{req.size}': each side must be at least 64.", "size")
    return (width, height), free_size(model, width, height, ("size", "size"))


def _ratio(size: str) -> float:
    width, height = parse_size(size)
    return width / height


def strength_for(req: ImageEditRequest, default: float) -> float:
    if req.strength is not None:
        return req.strength
    if req.input_fidelity == "high":
        return min(HIGH_FIDELITY_STRENGTH, default)
    return default


def to_job(
    req: ImageEditRequest,
    model: ModelConfig,
    request_id: str,
    image: InputImage,
    mask: InputImage | None,
    limits: ImageInputConfig,
    variation: bool = False,
) -> tuple[GenerationJob, tuple[int, int], Overlay | None]:
    """The img2img (or, with a mask, inpaint) job; returns (job, output size, overlay)."""
    # The generation checks (n, prompt length, steps, background, stream+url) are shared.
    check_against_model(_as_generate(req), model)
    ignored = [f for f in IGNORED_OPENAI_FIELDS if getattr(req, f) is not None]
    if ignored or req.unknown_fields():
        logger.info("request %s: ignoring fields %s", request_id, ignored + req.unknown_fields())
    output_size, (gen_w, gen_h) = output_and_generation_size(req, model, image)
    guidance = model.default_guidance if req.guidance_scale is None else req.guidance_scale
    job = GenerationJob(
        request_id=request_id,
        prompt=req.prompt,
        negative_prompt=req.negative_prompt,
        seeds=assign_seeds(req.n, req.seed),
        gen_width=gen_w,
        gen_height=gen_h,
        steps=req.num_inference_steps or model.default_steps,
        guidance=float(guidance),
        partial_images=(req.partial_images or 0) if req.stream else 0,
        scheduler=resolve_sampler(req.sampler, None, param="sampler"),
    )
    if variation:
        default = limits.variation_strength
    else:
        default = limits.inpaint_strength if mask is not None else limits.img2img_strength
    repaint = None if mask is None else mask_from_alpha(mask, image)
    job, overlay = with_init_image(job, image, strength_for(req, default), repaint, output_size)
    return job, output_size, overlay


def _as_generate(req: ImageEditRequest) -> ImageGenerateRequest:
    """The fields the generation checks read, in the generation request's model."""
    return ImageGenerateRequest.model_construct(
        prompt=req.prompt,
        n=req.n,
        response_format=req.response_format,
        background=req.background,
        stream=req.stream,
        num_inference_steps=req.num_inference_steps,
    )


def to_encode_spec(
    req: ImageEditRequest,
    request_id: str,
    output_size: tuple[int, int],
    base_url: str | None,
    overlay: Overlay | None,
) -> EncodeSpec:
    return EncodeSpec(
        request_id=request_id,
        width=output_size[0],
        height=output_size[1],
        output_format=req.output_format,
        compression=req.output_compression,
        response_format=req.response_format,
        base_url=base_url,
        overlay=overlay,
    )


def build_response(
    req: ImageEditRequest, spec: EncodeSpec, seeds: Sequence[int], images: Sequence[EncodedImage]
) -> dict[str, Any]:
    size = f"{spec.width}x{spec.height}"
    return images_response(req.output_format, req.quality, size, seeds, images)
