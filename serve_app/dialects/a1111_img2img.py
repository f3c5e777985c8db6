"""AUTOMATIC1111 ``POST /sdapi/v1/img2img``: txt2img's fields plus init images and a mask.

``init_images`` are base64 strings (bare, or ``data:image/...;base64,`` URLs, as A1111
accepts); only the first is used, as A1111 does without scripts. ``mask`` is
A1111's: white repaints, black keeps (``inpainting_mask_invert: 1`` swaps them).
Output size is ``width`` x ``height``; the init image is stretched to it (A1111's
``resize_mode`` 0, "Just resize"). ``denoising_strength`` is diffusers' ``strength``.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import json
from collections.abc import Sequence
from dataclasses import replace
from typing import Any

from common.config import ImageInputConfig
from common.errors import invalid, validate
from common.job import EncodedImage, EncodeSpec, GenerationJob
from common.model_config import ModelConfig
from serve_app.dialects import a1111
from serve_app.dialects.base import Context, Dialect, Translation, unsupported
from serve_app.inputs.uploads import decode_image, mask_from_luminance, with_init_image
from serve_app.protocol.a1111 import Img2ImgRequest


def parse(body: Any) -> Img2ImgRequest:
    return validate(Img2ImgRequest, body, kind="unprocessable")


def decode_b64(value: str, param: str) -> bytes:
    """A1111's ``decode_base64_to_image`` input: bare base64 or a base64 data URL."""
    if value.startswith("data:"):
        header, _, value = value.partition(",")
        if ";base64" not in header:
            raise invalid(f"'{param}' data: URL must be base64-encoded.", param, "invalid_image")
    try:
        return base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError):
        raise invalid(f"'{param}' is not valid base64.", param, "invalid_image") from None


def to_job(
    req: Img2ImgRequest, model: ModelConfig, request_id: str, limits: ImageInputConfig
) -> tuple[GenerationJob, EncodeSpec]:
    """Decode and check the images, then build the img2img / inpaint job and its spec."""
    if req.resize_mode != 0:
        raise unsupported(
            "resize_mode", "Only resize_mode 0 (just resize) is supported by this server."
        )
    if len(req.init_images) > limits.max_input_images:
        raise invalid(
            f"{len(req.init_images)} init_images sent; at most {limits.max_input_images}.",
            "init_images",
            "too_many_images",
        )
    job = a1111.to_job(req, model, request_id)  # logs the ignored fields
    images = [
        decode_image(decode_b64(data, f"init_images[{i}]"), f"init_images[{i}]", limits)
        for i, data in enumerate(req.init_images)
    ]
    mask = None
    if req.mask:
        decoded = decode_image(decode_b64(req.mask, "mask"), "mask", limits)
        mask = mask_from_luminance(decoded, images[0], invert=req.inpainting_mask_invert == 1)
    job, overlay = with_init_image(
        job, images[0], req.denoising_strength, mask, (req.width, req.height), "denoising_strength"
    )
    return job, replace(a1111.to_encode_spec(req, model, job, request_id), overlay=overlay)


def build_response(
    req: Img2ImgRequest, model: ModelConfig, job: GenerationJob, images: Sequence[EncodedImage]
) -> dict[str, Any]:
    """A1111's response; ``parameters`` echoes the images only with ``include_init_images``."""
    response = a1111.build_response(req, model, job, images)
    info = json.loads(response["info"])
    info["denoising_strength"] = req.denoising_strength
    info["is_using_inpainting_conditioning"] = False
    response["info"] = json.dumps(info)
    if not req.include_init_images:
        response["parameters"]["init_images"] = None
        response["parameters"]["mask"] = None
    return response


async def translate(
    req: Img2ImgRequest, model: ModelConfig, ctx: Context
) -> Translation[dict[str, Any]]:
    # Decoding base64 images is CPU work: a worker thread, so the loop keeps serving.
    job, spec = await asyncio.to_thread(to_job, req, model, ctx.request_id, ctx.images)
    return Translation(job, spec, lambda images: build_response(req, model, job, images))


IMG2IMG: Dialect[Img2ImgRequest, dict[str, Any]] = Dialect(
    name="a1111_img2img", parse=parse, model_name=a1111.checkpoint_override, translate=translate
)
