"""OpenAI model routes: ``GET /v1/models`` and ``GET /v1/models/{id}``.

Each card carries an extension, ``capabilities`` (:func:`capabilities`): the model's
step, guidance, image-count and size limits and the sampler names it takes, so a
client (the playground page among them) can build a valid request without guessing.
``POST /v1/images/generations`` serves every dialect and lives in ``generations.py``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute

from common.families import FLOW_MATCHING
from common.model_config import ModelConfig
from common.sizes import OPENAI_SIZES
from serve_app.asgi.endpoints import api_endpoint
from serve_app.asgi.openapi import ApiRoute, Operation
from serve_app.dialects.samplers import sampler_names
from serve_app.protocol.openai import (
    FreeSizeLimits,
    ModelCapabilities,
    ModelCard,
    ModelList,
    dump,
)

if TYPE_CHECKING:
    from serve_app.ingress import Ingress


def capabilities(model: ModelConfig) -> ModelCapabilities:
    """The configured limits of ``model``, as the card's ``capabilities`` extension."""
    return ModelCapabilities(
        default_steps=model.default_steps,
        max_steps=model.max_steps,
        default_guidance=model.default_guidance,
        max_images=model.max_images_per_request,
        sizes=[size for size in OPENAI_SIZES if size in model.buckets],
        free_size=FreeSizeLimits(
            max_side=model.max_side, max_pixels=model.max_pixels, multiple=model.size_multiple
        ),
        samplers=["Euler"] if model.known_family() in FLOW_MATCHING else sampler_names(),
    )


def routes(ingress: Ingress) -> list[BaseRoute]:
    def card(name: str) -> ModelCard:
        model = ingress.resolve_model(name)
        root = None if name == model.id else model.id
        return ModelCard(
            id=name,
            created=ingress.started,
            root=root,
            capabilities=capabilities(model),
            supports_loras=model.loras.enabled,
            family=model.known_family(),
        )

    async def list_models(request: Request) -> Response:
        return JSONResponse(dump(ModelList(data=[card(name) for name in ingress.names])))

    async def get_model(request: Request) -> Response:
        return JSONResponse(dump(card(request.path_params["model"])))

    return [
        ApiRoute(
            "/v1/models",
            api_endpoint(list_models),
            "GET",
            Operation("List models and aliases", response=ModelList),
        ),
        ApiRoute(
            "/v1/models/{model:path}",
            api_endpoint(get_model),
            "GET",
            Operation("One model or alias", response=ModelCard),
        ),
    ]
