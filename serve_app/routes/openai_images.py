"""OpenAI routes: ``POST /v1/images/generations`` and ``GET /v1/models``."""

from __future__ import annotations

from typing import TYPE_CHECKING

from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import BaseRoute, Route

from serve_app import openai_images
from serve_app.http import api_endpoint, read_json, request_id_of
from serve_app.protocol import ModelCard, ModelList, dump
from serve_app.streaming import SSE_HEADERS, generation_events

if TYPE_CHECKING:
    from serve_app.ingress import Ingress


def routes(ingress: Ingress) -> list[BaseRoute]:
    async def generations(request: Request) -> Response:
        request_id = request_id_of(request)
        body = await read_json(request, ingress.args.ingress.max_body_bytes)
        req = openai_images.parse_generate(body)
        model = ingress.resolve_model(req.model)
        job = openai_images.to_job(req, model, request_id)
        spec = openai_images.to_encode_spec(req, request_id, ingress.base_url(request))
        headers = {"x-imagegen-seeds": ",".join(map(str, job.seeds)), "x-imagegen-model": model.id}
        if req.stream:
            events = generation_events(ingress, model, req, job, spec)
            return StreamingResponse(
                events, media_type="text/event-stream", headers={**SSE_HEADERS, **headers}
            )
        images = await ingress.generate_images(model, job, spec)
        payload = openai_images.build_response(req, job.seeds, images)
        return JSONResponse(payload, headers=headers)

    async def list_models(request: Request) -> Response:
        cards = [
            ModelCard(id=name, created=ingress.started, root=None if name == mid else mid)
            for name, mid in ingress.names.items()
        ]
        return JSONResponse(dump(ModelList(data=cards)))

    async def get_model(request: Request) -> Response:
        name = request.path_params["model"]
        model = ingress.resolve_model(name)
        root = None if name == model.id else model.id
        return JSONResponse(dump(ModelCard(id=name, created=ingress.started, root=root)))

    return [
        Route("/v1/images/generations", api_endpoint(generations), methods=["POST"]),
        Route("/v1/models", api_endpoint(list_models), methods=["GET"]),
        Route("/v1/models/{model:path}", api_endpoint(get_model), methods=["GET"]),
    ]
