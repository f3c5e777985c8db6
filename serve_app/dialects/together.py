"""The Together AI images dialect on ``POST /v1/images/generations``.

What the ``together`` SDK's ``images.generate`` sends (``width``/``height``, ``steps``,
``guidance`` or ``guidance_scale``, ``response_format`` ``base64``/``url``, ...) ->
the canonical job; the images -> ``{id, model, object: "list", data: [{index,
b64_json | url, type}]}``, which the SDK parses into ``ImageFile``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from common.errors import check_image_count, validate
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
    unsupported,
)
from serve_app.dialects.loras import together_loras
from serve_app.inputs.fetch import load_url_image
from serve_app.inputs.uploads import with_init_image
from serve_app.protocol.together import TogetherImageRequest

TOGETHER_DEFAULT_STEPS = 20
# Fields only Together sends: any of them marks a request as Together's (see detect.py).
TOGETHER_ONLY_FIELDS = frozenset(
    {
        "steps",
        "width",
        "height",
        "guidance",
        "image_url",
        "image_loras",
        "reference_images",
        "disable_safety_checker",
    }
)
# Accepted and ignored: this server runs no safety checker.
IGNORED_FIELDS = ("disable_safety_checker",)


def parse(body: Any) -> TogetherImageRequest:
    return validate(TogetherImageRequest, body, strict=True)


def _check_unsupported(req: TogetherImageRequest) -> None:
    if req.reference_images:
        raise unsupported(
            "reference_images",
            "reference_images are not supported by this server's models; "
            "send the request without them.",
        )


def to_job(req: TogetherImageRequest, model: ModelConfig, request_id: str) -> GenerationJob:
    _check_unsupported(req)
    steps = req.steps if req.steps is not None else default_steps(model, TOGETHER_DEFAULT_STEPS)
    check_request(model, n=req.n, prompt=req.prompt, steps=steps, steps_param="steps")
    gen_w, gen_h = free_size(model, req.width, req.height)
    ignored = [f for f in IGNORED_FIELDS if getattr(req, f) is not None]
    log_ignored(request_id, "together", ignored + req.unknown_fields())
    loras = together_loras(req.image_loras, model)
    return new_job(
        model,
        request_id,
        prompt=req.prompt,
        negative_prompt=req.negative_prompt,
        seeds=assign_seeds(req.n, req.seed),
        gen_size=(gen_w, gen_h),
        steps=steps,
        guidance=req.guidance_value,
        loras=loras,
    )


def to_encode_spec(
    req: TogetherImageRequest, model: ModelConfig, request_id: str, base_url: str | None
) -> EncodeSpec:
    return EncodeSpec(
        request_id=request_id,
        width=req.width,
        height=req.height,
        output_format=req.output_format,
        compression=None,
        response_format="url" if req.response_format == "url" else "b64_json",
        base_url=base_url,
    )


def build_response(
    req: TogetherImageRequest,
    model: ModelConfig,
    job: GenerationJob,
    images: Sequence[EncodedImage],
) -> dict[str, Any]:
    check_image_count(len(images), job.n)
    data: list[dict[str, Any]] = []
    for index, (image, seed) in enumerate(zip(images, job.seeds, strict=True)):
        if image.url is not None:
            data.append({"index": index, "type": "url", "url": image.url, "seed": seed})
        else:
            data.append(
                {"index": index, "type": "b64_json", "b64_json": image.b64_json, "seed": seed}
            )
    return {"id": job.request_id, "model": req.model or model.id, "object": "list", "data": data}


async def translate(
    req: TogetherImageRequest, model: ModelConfig, ctx: Context
) -> Translation[dict[str, Any]]:
    """Text-to-image, or image-to-image from ``image_url`` (fetched through the safe fetcher)."""
    job = to_job(req, model, ctx.request_id)
    if req.image_url is not None:
        if ctx.fetcher is None:
            raise unsupported("image_url", "image_url is not accepted on this route.")
        image = await load_url_image(ctx.fetcher, req.image_url, "image_url", ctx.images)
        job, _ = with_init_image(job, image, req.strength or ctx.images.img2img_strength)
    spec = to_encode_spec(req, model, ctx.request_id, ctx.base_url)
    return Translation(job, spec, lambda images: build_response(req, model, job, images))


DIALECT: Dialect[TogetherImageRequest, dict[str, Any]] = Dialect(
    name="together", parse=parse, model_name=lambda req: req.model, translate=translate
)
