"""The imagine SDK (``python-imagine-sdk``) ``ImageRequest`` on ``POST /v1/images/generations``.

The SDK sends its whole ``ImageRequest`` with ``exclude_none``: defaults included
(``negative_prompt="blurry"``, ``seed=27``, ``seed_increment=100``, ``size="512x512"``,
``num_inference_steps=20``, ``guidance_scale=6.5``, ``response_format="b64_json"``).
The same defaults apply here when a field is absent; an explicit JSON ``null`` seed
draws random seeds. Image *i* uses ``seed + i * seed_increment``.

The response is ``{id, model, object: "text_to_image", created, data: [{b64_json,
url}]}``. For ``url`` the SDK prefixes the URL with its endpoint's parent
(``dirname("http://host/v1") + url``), so URLs here are host-relative paths.

``stream=true`` (``images_generate_stream``) runs the same streamed generation as
OpenAI's: the SDK reads ``data:`` lines, each a whole ``ImageResponse``, until
``data: [DONE]``. Here that is one response per preview step
(``IMAGINE_STREAM_PARTIALS`` of them, with an extra ``partial_image_index``),
then one with the finished images. Previews use the encoder's fast preview
settings; with ``response_format=url`` they are stored like finals, because the
SDK rewrites every item's ``url``. An error part-way is a ``data:`` line holding an
OpenAI error object, which the SDK fails to read as an ``ImageResponse`` and raises.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any
from urllib.parse import urlsplit

from common.errors import check_image_count, invalid, validate
from common.job import EncodedImage, EncodeSpec, GenerationJob, assign_seeds
from common.limits import check_request
from common.model_config import ModelConfig
from serve_app.dialects.base import (
    Context,
    Dialect,
    Translation,
    default_steps,
    free_size,
    log_ignored,
    new_job,
)
from serve_app.dialects.loras import extension_loras
from serve_app.protocol.imagine import ImagineImageRequest
from serve_app.streaming.imagine import ImagineStream

IMAGINE_DEFAULT_STEPS = 20
# Previews a stream=true request gets (the SDK has no parameter for it).
IMAGINE_STREAM_PARTIALS = 2
# Fields only the imagine SDK sends: any of them marks a request as imagine's (detect.py).
IMAGINE_ONLY_FIELDS = frozenset({"seed_increment", "cache_interval"})


def parse(body: Any) -> ImagineImageRequest:
    return validate(ImagineImageRequest, body, strict=True)


def to_job(req: ImagineImageRequest, model: ModelConfig, request_id: str) -> GenerationJob:
    steps = req.num_inference_steps or default_steps(model, IMAGINE_DEFAULT_STEPS)
    check_request(
        model, n=req.images, prompt=req.prompt, steps=steps, steps_param="num_inference_steps"
    )
    if req.cache_interval is not None and req.cache_interval > steps:
        raise invalid(
            f"cache_interval={req.cache_interval} is more than num_inference_steps={steps}: "
            "only the first step would run the full UNet.",
            param="cache_interval",
        )
    if req.cache_interval not in (None, 1) and model.performance.compile_unet:
        raise invalid(
            f"Model '{model.id}' runs a compiled UNet, which cache_interval cannot patch; "
            "send cache_interval=1 or omit it.",
            param="cache_interval",
        )
    width, height = req.width_height
    gen_w, gen_h = free_size(model, width, height, ("size", "size"))
    log_ignored(request_id, "imagine", req.unknown_fields())
    return new_job(
        model,
        request_id,
        prompt=req.prompt,
        negative_prompt=req.negative_prompt,
        seeds=assign_seeds(req.images, req.seed, req.increment),
        gen_size=(gen_w, gen_h),
        steps=steps,
        guidance=req.guidance_scale,
        cache_interval=req.cache_interval,
        partial_images=IMAGINE_STREAM_PARTIALS if req.stream else 0,
        loras=extension_loras(req.loras, model),
    )


def to_encode_spec(
    req: ImagineImageRequest, model: ModelConfig, request_id: str, base_url: str | None
) -> EncodeSpec:
    width, height = req.width_height
    return EncodeSpec(
        request_id=request_id,
        width=width,
        height=height,
        output_format="png",
        compression=None,
        response_format=req.response_format or "b64_json",
        base_url=base_url,
    )


def host_relative(url: str) -> str:
    """``http://host/v1/images/files/k?sig`` -> ``/v1/images/files/k?sig``."""
    parts = urlsplit(url)
    return f"{parts.path}?{parts.query}" if parts.query else parts.path


def build_response(
    req: ImagineImageRequest,
    model: ModelConfig,
    job: GenerationJob,
    images: Sequence[EncodedImage],
) -> dict[str, Any]:
    check_image_count(len(images), job.n)
    data = [
        {
            "b64_json": image.b64_json,
            "url": host_relative(image.url) if image.url else None,
            "seed": seed,
        }
        for image, seed in zip(images, job.seeds, strict=True)
    ]
    return {
        "id": job.request_id,
        "model": req.model or model.id,
        "object": "text_to_image",
        "created": int(time.time()),
        "data": data,
    }


def stream_format(
    req: ImagineImageRequest, model: ModelConfig, job: GenerationJob, spec: EncodeSpec
) -> ImagineStream | None:
    if not req.stream:
        return None
    return ImagineStream(lambda images: build_response(req, model, job, images))


async def translate(
    req: ImagineImageRequest, model: ModelConfig, ctx: Context
) -> Translation[dict[str, Any]]:
    job = to_job(req, model, ctx.request_id)
    spec = to_encode_spec(req, model, ctx.request_id, ctx.base_url)
    respond = lambda images: build_response(req, model, job, images)  # noqa: E731
    return Translation(job, spec, respond, stream_format(req, model, job, spec))


DIALECT: Dialect[ImagineImageRequest, dict[str, Any]] = Dialect(
    name="imagine", parse=parse, model_name=lambda req: req.model, translate=translate
)
