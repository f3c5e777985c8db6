"""OpenAI image edits and variations: form fields -> canonical img2img / inpaint job.

``POST /v1/images/edits`` (``ImageEditParams``) and ``POST /v1/images/variations``
(``ImageCreateVariationParams``) arrive as multipart forms, so every value is a
string; pydantic's lax mode turns ``"2"`` into ``2`` and ``"true"`` into ``True``.

Strength (the share of the denoising schedule that runs, so how far the result may
move from the input): ``strength`` if sent (extension), else ``input_fidelity``
``high`` -> 0.5, else the configured default (img2img 0.75, inpaint 1.0,
variations 0.6). ``input_fidelity: low`` is the default.

Forms are strings by nature, so these fields stay in pydantic's lax mode (``"2"`` is
2), unlike the JSON dialects, which are strict as OpenAI's JSON API is.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from common.config import ImageInputConfig
from common.errors import invalid, validate
from common.job import EncodeSpec, GenerationJob, Overlay
from common.model_config import ModelConfig
from common.sizes import OPENAI_SIZES, parse_size
from serve_app.dialects.base import Context, Dialect, Translation, free_size
from serve_app.dialects.openai import images_response, openai_job, request_usage
from serve_app.dialects.openai_rules import response_format
from serve_app.inputs.uploads import InputImage, decode_image, mask_from_alpha, with_init_image
from serve_app.protocol.openai import ImageEditRequest
from serve_app.streaming.openai import OpenAIStream

HIGH_FIDELITY_STRENGTH = 0.5
# size=auto picks the OpenAI size closest to the input's aspect ratio, as gpt-image-1 does.
AUTO_SIZES = ("1024x1024", "1536x1024", "1024x1536")
FILE_FIELDS = ("image", "image[]", "mask")


@dataclass(frozen=True)
class EditForm:
    """An edit or variation form, split: the images (undecoded), the mask, the fields."""

    images: tuple[tuple[str, bytes], ...]
    mask: bytes | None
    request: ImageEditRequest

    def decode(self, limits: ImageInputConfig) -> tuple[InputImage, InputImage | None]:
        """Decode and check every image (the first is the init image) and the mask."""
        if len(self.images) > limits.max_input_images:
            raise invalid(
                f"{len(self.images)} images sent; at most {limits.max_input_images} are accepted.",
                "image",
                "too_many_images",
            )
        decoded = [decode_image(data, param, limits) for param, data in self.images]
        mask = None if self.mask is None else decode_image(self.mask, "mask", limits)
        return decoded[0], mask


def split_form(
    items: list[tuple[str, object]],
) -> tuple[list[tuple[str, bytes]], bytes | None, dict[str, Any]]:
    """-> (images as (param, bytes), mask bytes, the other fields)."""
    images: list[tuple[str, bytes]] = []
    mask: bytes | None = None
    fields: dict[str, Any] = {}
    for name, value in items:
        if name in FILE_FIELDS:
            if not isinstance(value, bytes):
                raise invalid(f"'{name}' must be a file upload, not a text field.", name)
            if name == "mask":
                if mask is not None:
                    raise invalid("Send one mask.", "mask")
                mask = value
            else:
                images.append((f"{name}" if name == "image" else f"image[{len(images)}]", value))
        elif isinstance(value, bytes):
            raise invalid(f"Unexpected file field '{name}'.", name)
        else:
            fields[name] = value
    if not images:
        raise invalid(
            "Missing required parameter: 'image' (a png, jpeg or webp file; "
            "'image[]' for several).",
            "image",
            "missing_required_parameter",
        )
    return images, mask, fields


def parse_form(items: list[tuple[str, object]], variation: bool) -> EditForm:
    """The multipart items -> the split, validated form (images still undecoded)."""
    images, mask, fields = split_form(items)
    if variation and mask is not None:
        raise invalid("Variations take no mask; use /v1/images/edits.", "mask")
    return EditForm(tuple(images), mask, parse_fields(fields, variation))


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
    try:
        width, height = parse_size(size, auto=None)
    except ValueError:
        raise invalid(
            f"Invalid size '{req.size}': use auto, one of {list(OPENAI_SIZES[1:])} "
            "or WIDTHxHEIGHT.",
            "size",
            "invalid_size",
        ) from None
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
    output_size, gen_size = output_and_generation_size(req, model, image)
    # The output size comes from the image, so check_job checks its pixels later.
    job = openai_job(req, model, request_id, gen_size, None, "openai_edits")
    if variation:
        default = limits.variation_strength
    else:
        default = limits.inpaint_strength if mask is not None else limits.img2img_strength
    repaint = None if mask is None else mask_from_alpha(mask, image)
    job, overlay = with_init_image(job, image, strength_for(req, default), repaint, output_size)
    return job, output_size, overlay


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
        response_format=response_format(req),
        base_url=base_url,
        overlay=overlay,
    )


def edit_translation(
    req: ImageEditRequest,
    model: ModelConfig,
    ctx: Context,
    image: InputImage,
    mask: InputImage | None,
    variation: bool,
) -> Translation[dict[str, Any]]:
    """The translation of an edit or variation whose images are decoded (form or JSON)."""
    job, output_size, overlay = to_job(
        req, model, ctx.request_id, image, mask, ctx.images, variation
    )
    spec = to_encode_spec(req, ctx.request_id, output_size, ctx.base_url, overlay)
    stream = None
    if req.stream:
        stream = OpenAIStream("image_edit", job, spec, req.quality, request_usage(req, spec))
    return Translation(
        job, spec, lambda images: images_response(req, spec, job.seeds, images), stream
    )


def _translator(
    variation: bool,
) -> Callable[[EditForm, ModelConfig, Context], Awaitable[Translation[dict[str, Any]]]]:
    async def translate(
        form: EditForm, model: ModelConfig, ctx: Context
    ) -> Translation[dict[str, Any]]:
        # Decoding is CPU work on untrusted bytes: a worker thread, so the loop keeps serving.
        image, mask = await asyncio.to_thread(form.decode, ctx.images)
        return edit_translation(form.request, model, ctx, image, mask, variation)

    return translate


EDITS: Dialect[EditForm, dict[str, Any]] = Dialect(
    name="openai_edits",
    parse=lambda form: parse_form(form, variation=False),
    model_name=lambda form: form.request.model,
    priority=lambda form: form.request.priority,
    translate=_translator(variation=False),
)
VARIATIONS: Dialect[EditForm, dict[str, Any]] = Dialect(
    name="openai_variations",
    parse=lambda form: parse_form(form, variation=True),
    model_name=lambda form: form.request.model,
    priority=lambda form: form.request.priority,
    translate=_translator(variation=True),
)
