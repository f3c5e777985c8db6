"""AUTOMATIC1111 routes under ``/sdapi/v1``: models, per-client options, txt2img.

Every route checks Basic auth when it is configured and answers errors in
A1111's shape ``{error, detail, body, errors}``. Generation goes through the same
``Ingress.generate_images`` as every other dialect.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
from typing import TYPE_CHECKING, Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute

from common.errors import APIError
from common.families import FLOW_MATCHING
from common.job import EncodedImage
from common.model_config import ModelConfig
from common.paths import A1111_API
from serve_app.asgi.a1111_auth import BasicAuth, ClientOptions, client_key, load_credentials
from serve_app.asgi.endpoints import api_endpoint, read_json
from serve_app.asgi.openapi import ApiRoute, Operation
from serve_app.dialects import a1111, a1111_img2img
from serve_app.dialects.base import Dialect
from serve_app.dialects.loras import a1111_lora_items
from serve_app.dialects.samplers import sampler_items, scheduler_items
from serve_app.ingress import PREVIEWS, PROGRESS
from serve_app.protocol.a1111 import Txt2ImgRequest
from serve_app.routes.a1111_discovery import discovery_routes
from serve_app.routes.a1111_jobs import Board, control_routes
from serve_app.routes.answer import answer, context, translate_for

if TYPE_CHECKING:
    from serve_app.ingress import Ingress

logger = logging.getLogger("imagegen.a1111")


def routes(ingress: Ingress) -> list[BaseRoute]:
    config = ingress.args.a1111
    if not config.enabled:
        return []
    auth = BasicAuth(load_credentials(config))
    options = ClientOptions(config.options_dir)
    board = Board()
    logger.info("A1111 routes on %s (basic auth %s)", A1111_API, "on" if auth.enabled else "off")

    def client_of(request: Request) -> str:
        return client_key(request, auth.user(request))

    def resolve_checkpoint(value: Any) -> ModelConfig:
        if not isinstance(value, str) or not value.strip():
            raise APIError(
                "unprocessable",
                "sd_model_checkpoint must be a non-empty string.",
                param="sd_model_checkpoint",
            )
        return ingress.resolve_model(a1111.checkpoint_name(value))

    def saved_model(client: str) -> ModelConfig | None:
        model_id = options.get(client).get(a1111.CHECKPOINT_OPTION)
        if model_id in ingress.configs:
            return ingress.configs[model_id]
        if model_id is not None:
            logger.warning("a saved sd_model_checkpoint is no longer configured; using default")
        return None

    def current_model(client: str) -> ModelConfig:
        return saved_model(client) or ingress.resolve_model(None)

    async def sd_models(request: Request) -> Response:
        client_of(request)
        return JSONResponse([a1111.sd_model_item(m) for m in ingress.args.models])

    async def get_options(request: Request) -> Response:
        model = current_model(client_of(request))
        return JSONResponse(
            {
                a1111.CHECKPOINT_OPTION: a1111.model_title(model),
                "sd_checkpoint_hash": a1111.model_sha256(model),
                "samples_format": "png",
            }
        )

    async def set_options(request: Request) -> Response:
        client = client_of(request)
        body = await read_json(request)
        if not isinstance(body, dict):
            raise APIError("unprocessable", "The request body must be a JSON object.")
        if a1111.CHECKPOINT_OPTION in body:
            model = resolve_checkpoint(body[a1111.CHECKPOINT_OPTION])
            options.update(client, {a1111.CHECKPOINT_OPTION: model.id})
        ignored = sorted(set(body) - {a1111.CHECKPOINT_OPTION})
        if ignored:
            logger.info(
                "A1111 options: ignoring %s (only sd_model_checkpoint is settable)", ignored
            )
        return JSONResponse(None)

    async def generate(request: Request, dialect: Dialect[Any, dict[str, Any]]) -> Response:
        client = client_of(request)
        # img2img's base64 images make its bodies large: the middleware applies the
        # upload limit to that route.
        req = dialect.parse(await read_json(request))
        override = dialect.model_name(req)
        model = resolve_checkpoint(override) if override else current_model(client)
        plan = await translate_for(ingress, dialect, req, model, context(ingress, request))
        # On the job board while it runs: /progress reports it, /interrupt ends it.
        job = dataclasses.replace(plan.job, control=board.control_name())
        rid = job.request_id
        await board.call("start", client, rid, job.n, job.steps)
        outer = PROGRESS.get()  # an async job's own sink, if this runs as one

        def report(step: int, total: int) -> None:
            board.tell("progress", rid, step, total)
            if outer is not None:
                outer(step, total)

        def preview(images: list[EncodedImage]) -> None:
            board.tell("preview", rid, images[0].b64_json)

        token, shown = PROGRESS.set(report), PREVIEWS.set(preview)
        try:
            return await answer(ingress, model, dataclasses.replace(plan, job=job))
        finally:
            PREVIEWS.reset(shown)
            PROGRESS.reset(token)
            board.tell("finish", rid)

    async def txt2img(request: Request) -> Response:
        return await generate(request, a1111.TXT2IMG)

    async def img2img(request: Request) -> Response:
        return await generate(request, a1111_img2img.IMG2IMG)

    def flow_matching(request: Request) -> bool:
        """Whether the caller's current checkpoint samples by flow matching only."""
        return current_model(client_of(request)).known_family() in FLOW_MATCHING

    async def samplers(request: Request) -> Response:
        return JSONResponse(sampler_items(flow_matching(request)))

    async def schedulers(request: Request) -> Response:
        return JSONResponse(scheduler_items(flow_matching(request)))

    def route(path: str, endpoint: Any, method: str, operation: Operation) -> ApiRoute:
        return ApiRoute(A1111_API + path, api_endpoint(endpoint, "a1111"), method, operation)

    async def loras(request: Request) -> Response:
        """A1111's ``[{name, alias, path, metadata}]`` for the client's current model."""
        model = current_model(client_of(request))
        return JSONResponse(await asyncio.to_thread(a1111_lora_items, model))

    async def refresh_loras(request: Request) -> Response:
        client_of(request)
        await asyncio.to_thread(lambda: [a1111_lora_items(m, True) for m in ingress.args.models])
        return JSONResponse(None)

    return [
        route("/sd-models", sd_models, "GET", Operation("AUTOMATIC1111 checkpoints")),
        route("/options", get_options, "GET", Operation("AUTOMATIC1111 options of this client")),
        route("/options", set_options, "POST", Operation("Set this client's checkpoint")),
        route("/txt2img", txt2img, "POST", Operation("AUTOMATIC1111 txt2img", Txt2ImgRequest)),
        route("/img2img", img2img, "POST", Operation("AUTOMATIC1111 img2img")),
        route("/samplers", samplers, "GET", Operation("AUTOMATIC1111 sampler names")),
        route("/schedulers", schedulers, "GET", Operation("AUTOMATIC1111 schedule names")),
        route("/loras", loras, "GET", Operation("AUTOMATIC1111 LoRA networks (Lora extension)")),
        route("/refresh-loras", refresh_loras, "POST", Operation("Rescan the LoRA folders")),
        *discovery_routes(route, client_of, auth.enabled),
        *control_routes(route, client_of, board),
    ]
