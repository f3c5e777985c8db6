"""The OpenAI Images dialect: request body -> canonical job, results -> ``ImagesResponse``."""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

from common import limits
from common.errors import check_image_count, invalid, validate
from common.job import EncodedImage, EncodeSpec, GenerationJob, assign_seeds
from common.model_config import ModelConfig
from serve_app.dialects.base import Context, Dialect, Translation, log_ignored, new_job
from serve_app.dialects.loras import extension_loras
from serve_app.dialects.openai_rules import generation_size, response_format, usage
from serve_app.dialects.samplers import resolve_sampler
from serve_app.protocol.openai import (
    IGNORED_OPENAI_FIELDS,
    ImageData,
    ImageGenerateRequest,
    ImagesResponse,
    ImageUsage,
    OpenAIImageParams,
    dump,
)
from serve_app.streaming.openai import OpenAIStream


def parse_generate(body: Any) -> ImageGenerateRequest:
    """Validate a JSON body; every failure is a 400 naming the parameter."""
    return validate(ImageGenerateRequest, body, strict=True)


def check_openai(
    model: ModelConfig,
    *,
    prompt: str,
    n: int,
    steps: int,
    negative_prompt: str | None = None,
    size: tuple[int, int] | None = None,
    background: str = "auto",
    stream: bool = False,
    response_format: str = "b64_json",
) -> None:
    """OpenAI's rules that depend on the chosen model, for every caller's own values
    (generations, edits and variations, the imagine images API).

    ``size`` is the output size when it is known before the input image is read;
    otherwise the ingress's ``check_job`` checks the pixels of the finished spec.
    """
    if stream and response_format == "url":
        raise invalid(
            "stream=true sends images as b64_json; response_format='url' cannot be streamed.",
            param="response_format",
            code="unsupported_value",
        )
    if background == "transparent":
        raise invalid(
            f"Model '{model.id}' cannot generate transparent backgrounds "
            "(SDXL pipelines produce no alpha channel); use background='opaque' or 'auto'.",
            param="background",
            code="unsupported_value",
        )
    limits.check_request(
        model,
        n=n,
        prompt=prompt,
        negative_prompt=negative_prompt,
        steps=steps,
        steps_param="num_inference_steps",
    )
    if size is not None:
        limits.check_pixels(model, n, size[0], size[1], "n")


def ignored_openai_fields(req: OpenAIImageParams) -> list[str]:
    """The OpenAI fields a diffusion model has no use for, plus unknown ones."""
    return [f for f in IGNORED_OPENAI_FIELDS if getattr(req, f) is not None] + req.unknown_fields()


def openai_job(
    req: OpenAIImageParams,
    model: ModelConfig,
    request_id: str,
    gen_size: tuple[int, int],
    output_size: tuple[int, int] | None,
    dialect: str = "openai",
) -> GenerationJob:
    """Check and translate what generations and edits share (``OpenAIImageParams``).

    ``output_size`` is ``None`` when it depends on an input image (``check_job``
    then checks the pixels of the finished spec).
    """
    steps = req.num_inference_steps or model.default_steps
    check_openai(
        model,
        prompt=req.prompt,
        n=req.n,
        steps=steps,
        negative_prompt=req.negative_prompt,
        size=output_size,
        background=req.background,
        stream=req.stream,
        response_format=response_format(req),
    )
    log_ignored(request_id, dialect, ignored_openai_fields(req))
    return new_job(
        model,
        request_id,
        prompt=req.prompt,
        negative_prompt=req.negative_prompt,
        seeds=assign_seeds(req.n, req.seed),
        gen_size=gen_size,
        steps=steps,
        guidance=req.guidance_scale,
        partial_images=(req.partial_images or 0) if req.stream else 0,
        scheduler=resolve_sampler(req.sampler, None, param="sampler"),
        loras=extension_loras(req.loras, model),
    )


def to_job(req: ImageGenerateRequest, model: ModelConfig, request_id: str) -> GenerationJob:
    output, gen = generation_size(req.size, model)
    return openai_job(req, model, request_id, gen, output)


def to_encode_spec(
    req: ImageGenerateRequest, model: ModelConfig, request_id: str, base_url: str | None
) -> EncodeSpec:
    (width, height), _ = generation_size(req.size, model)
    return EncodeSpec(
        request_id=request_id,
        width=width,
        height=height,
        output_format=req.output_format,
        compression=req.output_compression,
        response_format=response_format(req),
        base_url=base_url,
    )


def request_usage(req: OpenAIImageParams, spec: EncodeSpec) -> ImageUsage:
    """The ``usage`` of a generation or edit: its prompt, ``n`` images at the output size."""
    return usage(req.prompt, req.n, (spec.width, spec.height), req.quality)


def images_response(
    req: OpenAIImageParams,
    spec: EncodeSpec,
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
        output_format=req.output_format,
        quality=req.quality,
        size=f"{spec.width}x{spec.height}",
        usage=request_usage(req, spec),
    )
    return dump(response)


async def translate(
    req: ImageGenerateRequest, model: ModelConfig, ctx: Context
) -> Translation[dict[str, Any]]:
    job = to_job(req, model, ctx.request_id)
    spec = to_encode_spec(req, model, ctx.request_id, ctx.base_url)
    stream = None
    if req.stream:
        stream = OpenAIStream("image_generation", job, spec, req.quality, request_usage(req, spec))
    return Translation(
        job, spec, lambda images: images_response(req, spec, job.seeds, images), stream
    )


DIALECT: Dialect[ImageGenerateRequest, dict[str, Any]] = Dialect(
    name="openai", parse=parse_generate, model_name=lambda req: req.model, translate=translate
)
