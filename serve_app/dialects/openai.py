"""The OpenAI Images dialect: request body -> canonical job, results -> ``ImagesResponse``."""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from typing import Any

from common import limits
from common.errors import check_image_count, invalid, validate
from common.job import EncodedImage, EncodeSpec, GenerationJob, assign_seeds
from common.model_config import ModelConfig
from common.sizes import parse_size
from serve_app.dialects.loras import extension_loras
from serve_app.protocol.openai import (
    IGNORED_OPENAI_FIELDS,
    ImageData,
    ImageGenerateRequest,
    ImagesResponse,
    dump,
)

logger = logging.getLogger("imagegen.openai")


def parse_generate(body: Any) -> ImageGenerateRequest:
    """Validate a JSON body; every failure is a 400 naming the parameter."""
    return validate(ImageGenerateRequest, body)


def check_against_model(req: ImageGenerateRequest, model: ModelConfig) -> None:
    """Rules that depend on the chosen model's limits and abilities."""
    if req.stream and req.response_format == "url":
        raise invalid(
            "stream=true sends images as b64_json; response_format='url' cannot be streamed.",
            param="response_format",
            code="unsupported_value",
        )
    if req.background == "transparent":
        raise invalid(
            f"Model '{model.id}' cannot generate transparent backgrounds "
            "(SDXL pipelines produce no alpha channel); use background='opaque' or 'auto'.",
            param="background",
            code="unsupported_value",
        )
    limits.check_request(
        model,
        n=req.n,
        prompt=req.prompt,
        negative_prompt=req.negative_prompt,
        steps=req.num_inference_steps or model.default_steps,
        steps_param="num_inference_steps",
    )
    width, height = parse_size(req.size)
    limits.check_pixels(model, req.n, width, height, "n")


def to_job(req: ImageGenerateRequest, model: ModelConfig, request_id: str) -> GenerationJob:
    check_against_model(req, model)
    ignored = [f for f in IGNORED_OPENAI_FIELDS if getattr(req, f) is not None]
    unknown = req.unknown_fields()
    if ignored or unknown:
        logger.info("request %s: ignoring fields %s", request_id, ignored + unknown)
    gen_w, gen_h = model.generation_size(req.size)
    steps = req.num_inference_steps or model.default_steps
    guidance = model.default_guidance if req.guidance_scale is None else req.guidance_scale
    return GenerationJob(
        request_id=request_id,
        prompt=req.prompt,
        negative_prompt=req.negative_prompt,
        seeds=assign_seeds(req.n, req.seed),
        gen_width=gen_w,
        gen_height=gen_h,
        steps=steps,
        guidance=float(guidance),
        partial_images=(req.partial_images or 0) if req.stream else 0,
        loras=extension_loras(req.loras, model),
    )


def to_encode_spec(req: ImageGenerateRequest, request_id: str, base_url: str | None) -> EncodeSpec:
    width, height = parse_size(req.size)
    return EncodeSpec(
        request_id=request_id,
        width=width,
        height=height,
        output_format=req.output_format,
        compression=req.output_compression,
        response_format=req.response_format,
        base_url=base_url,
    )


def build_response(
    req: ImageGenerateRequest, seeds: Sequence[int], images: Sequence[EncodedImage]
) -> dict[str, Any]:
    width, height = parse_size(req.size)
    return images_response(req.output_format, req.quality, f"{width}x{height}", seeds, images)


def images_response(
    output_format: str,
    quality: str | None,
    size: str,
    seeds: Sequence[int],
    images: Sequence[EncodedImage],
) -> dict[str, Any]:
    """OpenAI's ``ImagesResponse`` body (generations and edits), one item per image."""
    check_image_count(len(images), len(seeds))
    response = ImagesResponse(
        created=int(time.time()),
        data=[
            ImageData(b64_json=img.b64_json, url=img.url, seed=seed)
            for img, seed in zip(images, seeds, strict=True)
        ],
        background="opaque",
        output_format=output_format,
        quality=quality,
        size=size,
    )
    return dump(response)
