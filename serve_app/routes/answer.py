"""What every generating route does once its dialect has translated the request.

Routes stay thin: parse, resolve the model, ``translate`` (``dialects/base.py``), then
:func:`answer`, which runs the translation through the ingress, plain or streamed,
and shapes the response with the dialect's own ``respond``.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from common.model_config import ModelConfig
from serve_app.asgi.endpoints import generation_headers, owner_of, request_id_of
from serve_app.asgi.scheduling import PRIORITY_HEADER as PRIORITY_RESPONSE_HEADER
from serve_app.asgi.scheduling import scheduling_of
from serve_app.dialects.base import Context, Dialect, Translation
from serve_app.dialects.infotext import with_png_text
from serve_app.dialects.loras import renamed_param
from serve_app.inputs.fetch import ImageFetcher
from serve_app.inputs.lora_urls import fetch_url_loras
from serve_app.streaming.sse import sse_response

if TYPE_CHECKING:
    from serve_app.ingress import Ingress


# Where a dialect names adapter i, when not ``loras[i].name`` (OpenAI, imagine).
LORA_PARAMS: dict[str, Callable[[int], str]] = {
    "together": "image_loras[{}].path".format,
    "a1111": lambda index: "prompt",
    "a1111_img2img": lambda index: "prompt",
}


def context(ingress: Ingress, request: Request, fetcher: ImageFetcher | None = None) -> Context:
    """The translation context of one HTTP request."""
    return Context(
        request_id=request_id_of(request),
        images=ingress.args.images,
        base_url=ingress.base_url(request),
        fetcher=fetcher,
        owner=owner_of(request),
        scheduling=scheduling_of(request, ingress.args.ingress.request_timeout_s),
    )


async def translate(
    ingress: Ingress, dialect: Dialect[Any, Any], body: Any, ctx: Context
) -> tuple[ModelConfig, Translation[Any]]:
    """Parse with the dialect, pick the model it names, translate."""
    req = dialect.parse(body)
    model = ingress.resolve_model(dialect.model_name(req))
    return model, await translate_for(ingress, dialect, req, model, ctx)


async def translate_for(
    ingress: Ingress, dialect: Dialect[Any, Any], req: Any, model: ModelConfig, ctx: Context
) -> Translation[Any]:
    """Translate a parsed request for ``model``; adapters named by URL are fetched (once,
    through the safe fetcher) and replaced by their cached files. PNG outputs get A1111's
    ``parameters`` text (``dialects/infotext.py``) unless the dialect wrote its own.
    Every job gets its class and deadline here (``asgi/scheduling.py``)."""
    priority = ctx.scheduling.resolve(dialect.priority(req))
    plan = await dialect.translate(req, model, ctx)
    param = LORA_PARAMS.get(dialect.name, plan.lora_param)
    fetcher = ctx.fetcher or ImageFetcher(ingress.args.images)
    scheduled = dataclasses.replace(
        plan.job, priority=priority, deadline_at=ctx.scheduling.deadline_at()
    )
    job = await fetch_url_loras(scheduled, model, fetcher, param)
    spec = with_png_text(plan.spec, job, model)
    return dataclasses.replace(plan, job=job, spec=spec, lora_param=param)


async def answer(
    ingress: Ingress,
    model: ModelConfig,
    plan: Translation[dict[str, Any]],
    extra_headers: dict[str, str] | None = None,
) -> Response:
    """Generate and encode (or stream), then the dialect's JSON body, with the seeds and
    model headers every generating route sends."""
    headers = {
        **generation_headers(plan.job.seeds, model.id),
        PRIORITY_RESPONSE_HEADER: plan.job.priority,
        **(extra_headers or {}),
    }
    if plan.stream is not None:
        frames = await ingress.stream_images(model, plan.job, plan.spec, plan.stream)
        return sse_response(frames, headers)
    try:
        images = await ingress.generate_images(model, plan.job, plan.spec)
    except Exception as exc:
        # A replica's load-time LoRA error names ``loras[i]``: report the request's field.
        # Anything else is re-raised as it is: its cause chain classifies it (a replica
        # that died shows as the RayServeException's ``__cause__``).
        renamed = renamed_param(exc, plan.lora_param)
        if renamed is exc:
            raise
        raise renamed from None
    return JSONResponse(plan.respond(images), headers=headers)
