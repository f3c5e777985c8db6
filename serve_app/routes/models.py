"""OpenAI model routes: ``GET /v1/models`` and ``GET /v1/models/{id}``.

``POST /v1/images/generations`` serves every dialect and lives in ``generations.py``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Route

from serve_app.asgi.endpoints import api_endpoint
from serve_app.protocol.openai import ModelCard, ModelList, dump

if TYPE_CHECKING:
    from serve_app.ingress import Ingress


def routes(ingress: Ingress) -> list[BaseRoute]:
    async def list_models(request: Request) -> Response:
        cards = [
            ModelCard(
                id=name,
                created=ingress.started,
                root=None if name == mid else mid,
                supports_loras=ingress.configs[mid].loras.enabled,
            )
            for name, mid in ingress.names.items()
        ]
        return JSONResponse(dump(ModelList(data=cards)))

    async def get_model(request: Request) -> Response:
        name = request.path_params["model"]
        model = ingress.resolve_model(name)
        root = None if name == model.id else model.id
        card = ModelCard(
            id=name, created=ingress.started, root=root, supports_loras=model.loras.enabled
        )
        return JSONResponse(dump(card))

    return [
        Route("/v1/models", api_endpoint(list_models), methods=["GET"]),
        Route("/v1/models/{model:path}", api_endpoint(get_model), methods=["GET"]),
    ]
