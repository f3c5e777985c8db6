"""``POST /v1/images/edits`` and ``POST /v1/images/variations`` (multipart).

Images come as ``image`` or ``image[]`` (the openai SDK sends a list as ``image[]``,
Open WebUI sends ``image[]`` even for one image; both are accepted, mixed too), up
to ``images.max_input_images``. Every image is decoded and checked; the first is the
init image (SDXL img2img takes one). ``mask`` turns the edit into inpainting.
Decoding runs in a worker thread so the event loop keeps serving.
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute

from common.errors import invalid
from serve_app.asgi.endpoints import api_endpoint, generation_headers, request_id_of
from serve_app.asgi.openapi import ApiRoute, Operation
from serve_app.dialects import openai_edits as edits
from serve_app.inputs.uploads import InputImage, decode_image, read_form
from serve_app.streaming.openai import OpenAIStream
from serve_app.streaming.sse import sse_response

if TYPE_CHECKING:
    from common.config import ImageInputConfig
    from serve_app.ingress import Ingress


def split_form(
    items: list[tuple[str, object]], limits: ImageInputConfig
) -> tuple[list[tuple[str, bytes]], bytes | None, dict[str, Any]]:
    """-> (images as (param, bytes), mask bytes, the other fields)."""
    images: list[tuple[str, bytes]] = []
    mask: bytes | None = None
    fields: dict[str, Any] = {}
    for name, value in items:
        if name in edits.FILE_FIELDS:
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
    if len(images) > limits.max_input_images:
        raise invalid(
            f"{len(images)} images sent; at most {limits.max_input_images} are accepted.",
            "image",
            "too_many_images",
        )
    return images, mask, fields


def decode_all(
    images: list[tuple[str, bytes]], mask: bytes | None, limits: ImageInputConfig
) -> tuple[InputImage, InputImage | None]:
    decoded = [decode_image(data, param, limits) for param, data in images]
    return decoded[0], None if mask is None else decode_image(mask, "mask", limits)


def routes(ingress: Ingress) -> list[BaseRoute]:
    limits = ingress.args.images

    async def handle(request: Request, variation: bool) -> Response:
        request_id = request_id_of(request)
        items = await read_form(request, limits)
        images, mask_bytes, fields = split_form(items, limits)
        if variation and mask_bytes is not None:
            raise invalid("Variations take no mask; use /v1/images/edits.", "mask")
        req = edits.parse_fields(fields, variation)
        model = ingress.resolve_model(req.model)
        image, mask = await asyncio.to_thread(decode_all, images, mask_bytes, limits)
        job, output_size, overlay = edits.to_job(
            req, model, request_id, image, mask, limits, variation
        )
        spec = edits.to_encode_spec(
            req, request_id, output_size, ingress.base_url(request), overlay
        )
        headers = generation_headers(job.seeds, model.id)
        if req.stream:
            fmt = OpenAIStream("image_edit", job, spec, req.quality)
            return sse_response(ingress.stream_images(model, job, spec, fmt), headers)
        encoded = await ingress.generate_images(model, job, spec)
        return JSONResponse(edits.build_response(req, spec, job.seeds, encoded), headers=headers)

    async def edit(request: Request) -> Response:
        return await handle(request, variation=False)

    async def variations(request: Request) -> Response:
        return await handle(request, variation=True)

    return [
        ApiRoute(
            "/v1/images/edits",
            api_endpoint(edit),
            "POST",
            Operation("Edit an image: img2img, or inpainting with a mask (multipart)"),
        ),
        ApiRoute(
            "/v1/images/variations",
            api_endpoint(variations),
            "POST",
            Operation("Variations of an image (multipart)"),
        ),
    ]
