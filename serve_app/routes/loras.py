"""``GET /v1/loras``: each model's LoRA adapters (name, source, rank, size, target model).

The A1111 shapes (``GET /sdapi/v1/loras``, ``POST /sdapi/v1/refresh-loras``) live with
the other A1111 routes, behind their Basic auth. Listing reads safetensors headers
only, never tensors, and answers from the ingress without waking a model.
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute

from common.errors import invalid
from common.model_config import ModelConfig
from serve_app.asgi.endpoints import api_endpoint
from serve_app.asgi.openapi import ApiRoute, Operation
from storage.lora_files import registry_for

if TYPE_CHECKING:
    from serve_app.ingress import Ingress


def lora_listing(models: list[ModelConfig], refresh: bool = False) -> list[dict[str, object]]:
    """Every adapter of every model that takes adapters, OpenAI-list style items."""
    items: list[dict[str, object]] = []
    for model in models:
        if not model.loras.enabled:
            continue
        for info in registry_for(model).listing(refresh=refresh):
            items.append({"object": "lora", **info.to_dict()})
    return items


def routes(ingress: Ingress) -> list[BaseRoute]:
    async def list_loras(request: Request) -> Response:
        """``?model=`` narrows the list to one model (id or alias); ``?refresh=true`` rescans."""
        unknown = sorted(set(request.query_params) - {"model", "refresh"})
        if unknown:
            raise invalid(f"Unknown query parameters {unknown}; use model and refresh.", unknown[0])
        name = request.query_params.get("model")
        models = [ingress.resolve_model(name)] if name else list(ingress.args.models)
        refresh_value = request.query_params.get("refresh", "false")
        if refresh_value not in ("true", "false"):
            raise invalid(
                f"refresh must be 'true' or 'false', got {refresh_value!r}.", param="refresh"
            )
        refresh = refresh_value == "true"
        data = await asyncio.to_thread(lora_listing, models, refresh)
        return JSONResponse({"object": "list", "data": data})

    listing = Operation(
        "List LoRA adapters (name, source, rank, size, target model)",
        query={
            "model": {"type": "string"},
            "refresh": {"type": "string", "enum": ["true", "false"]},
        },
    )
    return [ApiRoute("/v1/loras", api_endpoint(list_loras), "GET", listing)]
