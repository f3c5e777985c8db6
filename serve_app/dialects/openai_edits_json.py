"""``POST /v1/images/edits`` with a JSON body, as OpenAI's API now takes edits.

``images: [{"image_url": ...}]`` (1 to ``images.max_input_images``) and an optional
``mask: {"image_url": ...}``; each URL is an ``http(s)`` URL fetched through the
SSRF-safe fetcher (``inputs/fetch.py``) or a ``data:`` URL. ``file_id`` references
(OpenAI's Files API) are a 400: this server has no file store for them. Every other
field means what it means in the multipart form (``dialects/openai_edits.py``),
which also builds the job.
"""

from __future__ import annotations

from typing import Any

from common.errors import invalid, validate
from common.model_config import ModelConfig
from serve_app.dialects.base import Context, Dialect, Translation, unsupported
from serve_app.dialects.openai_edits import edit_translation
from serve_app.inputs.fetch import ImageFetcher, load_url_image
from serve_app.protocol.openai import ImageEditJSONRequest, ImageRef


def parse(body: Any) -> ImageEditJSONRequest:
    req = validate(ImageEditJSONRequest, body, strict=True)
    if not req.prompt:
        raise invalid(
            "Missing required parameter: 'prompt'.", "prompt", "missing_required_parameter"
        )
    return req


def _url(ref: ImageRef, param: str) -> str:
    if ref.image_url:
        return ref.image_url
    if ref.file_id is not None:
        raise unsupported(
            f"{param}.file_id", "file_id references are not supported; send an image_url."
        )
    raise invalid(
        f"Missing required parameter: '{param}.image_url'.",
        f"{param}.image_url",
        "missing_required_parameter",
    )


async def translate(
    req: ImageEditJSONRequest, model: ModelConfig, ctx: Context
) -> Translation[dict[str, Any]]:
    limits = ctx.images
    if len(req.images) > limits.max_input_images:
        raise invalid(
            f"{len(req.images)} images sent; at most {limits.max_input_images} are accepted.",
            "images",
            "too_many_images",
        )
    fetcher = ctx.fetcher or ImageFetcher(limits)
    params = [f"images[{i}]" for i in range(len(req.images))]
    urls = [_url(ref, param) for ref, param in zip(req.images, params, strict=True)]
    images = [
        await load_url_image(fetcher, url, f"{param}.image_url", limits)
        for url, param in zip(urls, params, strict=True)
    ]
    mask = None
    if req.mask is not None:
        mask = await load_url_image(fetcher, _url(req.mask, "mask"), "mask.image_url", limits)
    return edit_translation(req, model, ctx, images[0], mask, variation=False)


EDITS_JSON: Dialect[ImageEditJSONRequest, dict[str, Any]] = Dialect(
    name="openai_edits", parse=parse, model_name=lambda req: req.model, translate=translate
)
