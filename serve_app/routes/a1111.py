"""AUTOMATIC1111 routes under ``/sdapi/v1``: models, per-client options, txt2img.

Every route checks Basic auth when it is configured and answers errors in
A1111's shape ``{error, detail, body, errors}``. Generation goes through the same
``Ingress.generate_images`` as every other dialect.
"""

from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING, Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Route

from common.errors import APIError
from common.model_config import ModelConfig
from serve_app.asgi.a1111_auth import BasicAuth, ClientOptions, client_key, load_credentials
from serve_app.asgi.endpoints import api_endpoint, generation_headers, read_json, request_id_of
from serve_app.dialects import a1111, a1111_img2img
from serve_app.dialects.loras import a1111_lora_items, renamed_param
from serve_app.dialects.samplers import sampler_items, scheduler_items

if TYPE_CHECKING:
    from serve_app.ingress import Ingress

logger = logging.getLogger("imagegen.a1111")
PREFIX = "/sdapi/v1"


def routes(ingress: Ingress) -> list[BaseRoute]:
    config = ingress.args.a1111
    if not config.enabled:
        return []
    auth = BasicAuth(load_credentials(config))
    options = ClientOptions(config.options_dir)
    logger.info("A1111 routes on %s (basic auth %s)", PREFIX, "on" if auth.enabled else "off")

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

    async def generate(model: ModelConfig, job: Any, spec: Any) -> Any:
        """A replica's load-time LoRA error (``loras[i]``) is about a tag in the prompt."""
        try:
            return await ingress.generate_images(model, job, spec)
        except Exception as exc:
            raise renamed_param(exc, lambda index: "prompt") from None

    async def txt2img(request: Request) -> Response:
        request_id = request_id_of(request)
        client = client_of(request)
        body = await read_json(request)
        req = a1111.parse(body)
        override = a1111.checkpoint_override(req)
        model = resolve_checkpoint(override) if override else current_model(client)
        job = a1111.to_job(req, model, request_id)
        images = await generate(model, job, a1111.to_encode_spec(req, request_id))
        payload = a1111.build_response(req, model, job, images)
        headers = generation_headers(job.seeds, model.id)
        return JSONResponse(payload, headers=headers)

    async def img2img(request: Request) -> Response:
        request_id = request_id_of(request)
        client = client_of(request)
        # Base64 images make these bodies large: the middleware applies the upload limit.
        body = await read_json(request)
        req = a1111_img2img.parse(body)
        override = a1111.checkpoint_override(req)
        model = resolve_checkpoint(override) if override else current_model(client)
        job, spec = await asyncio.to_thread(
            a1111_img2img.to_job, req, model, request_id, ingress.args.images
        )
        images = await generate(model, job, spec)
        payload = a1111_img2img.build_response(req, model, job, images)
        headers = generation_headers(job.seeds, model.id)
        return JSONResponse(payload, headers=headers)

    async def samplers(request: Request) -> Response:
        client_of(request)
        return JSONResponse(sampler_items())

    async def schedulers(request: Request) -> Response:
        client_of(request)
        return JSONResponse(scheduler_items())

    async def loras(request: Request) -> Response:
        """A1111's ``[{name, alias, path, metadata}]`` for the client's current model."""
        model = current_model(client_of(request))
        return JSONResponse(await asyncio.to_thread(a1111_lora_items, model))

    async def refresh_loras(request: Request) -> Response:
        client_of(request)
        await asyncio.to_thread(lambda: [a1111_lora_items(m, True) for m in ingress.args.models])
        return JSONResponse(None)

    def route(path: str, endpoint: Any, method: str) -> Route:
        return Route(PREFIX + path, api_endpoint(endpoint, "a1111"), methods=[method])

    return [
        route("/sd-models", sd_models, "GET"),
        route("/options", get_options, "GET"),
        route("/options", set_options, "POST"),
        route("/txt2img", txt2img, "POST"),
        route("/img2img", img2img, "POST"),
        route("/samplers", samplers, "GET"),
        route("/schedulers", schedulers, "GET"),
        route("/loras", loras, "GET"),
        route("/refresh-loras", refresh_loras, "POST"),
    ]
