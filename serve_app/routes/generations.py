"""``POST /v1/images/generations``: one route, three dialects, one generation path.

The dispatch is all here: detect the dialect (``dialects/detect.py``), let it
translate the body into the canonical job and encode spec, run the shared
generate-then-encode path, and let it shape the response.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute

from serve_app.asgi.endpoints import api_endpoint, read_json
from serve_app.asgi.openapi import ApiRoute, Operation
from serve_app.dialects.detect import detect
from serve_app.dialects.registry import REGISTRY
from serve_app.inputs.fetch import ImageFetcher
from serve_app.protocol.openai import ImageGenerateRequest, ImagesResponse
from serve_app.routes.answer import answer, context, translate

if TYPE_CHECKING:
    from serve_app.ingress import Ingress

DIALECT_RESPONSE_HEADER = "x-imagegen-dialect"
GENERATIONS = Operation(
    "Generate images (OpenAI dialect shown; Together and imagine bodies are accepted "
    "too, see docs/api/)",
    ImageGenerateRequest,
    ImagesResponse,
    streams=True,
)


def routes(ingress: Ingress) -> list[BaseRoute]:
    fetcher = ImageFetcher(ingress.args.images)

    async def generations(request: Request) -> Response:
        body = await read_json(request)
        dialect = REGISTRY[detect(request.headers, body)]
        model, plan = await translate(ingress, dialect, body, context(ingress, request, fetcher))
        return await answer(ingress, model, plan, {DIALECT_RESPONSE_HEADER: dialect.name})

    return [ApiRoute("/v1/images/generations", api_endpoint(generations), "POST", GENERATIONS)]
