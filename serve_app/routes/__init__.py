"""Every HTTP route of the ingress, one module per API surface, and the ASGI app."""

from __future__ import annotations

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.routing import BaseRoute

from serve_app.asgi.endpoints import http_exception_handler
from serve_app.asgi.middleware import ingress_middleware
from serve_app.asgi.openapi import openapi_route
from serve_app.ingress import Ingress
from serve_app.routes import (
    a1111,
    edits,
    files,
    generations,
    imagine,
    jobs,
    loras,
    models,
    playground,
    system,
)


def all_routes(ingress: Ingress) -> list[BaseRoute]:
    """Specific paths come before parameterised ones (Starlette matches in order). The
    generation, edit and imagine routes also take the async form (``routes/jobs.py``)."""
    return [
        *jobs.routes(
            ingress,
            [*generations.routes(ingress), *edits.routes(ingress), *imagine.routes(ingress)],
        ),
        *models.routes(ingress),
        *loras.routes(ingress),
        *a1111.routes(ingress),
        *files.routes(ingress),
        *system.routes(ingress),
        *playground.routes(ingress),
    ]


def asgi_app(ingress: Ingress) -> Starlette:
    """The ingress's HTTP app: the routes, ``/openapi.json``, the guard middleware."""
    routes = all_routes(ingress)
    return Starlette(
        routes=[*routes, openapi_route(routes)],
        middleware=ingress_middleware(ingress.args.ingress, ingress.args.images, ingress.api_keys),
        exception_handlers={HTTPException: http_exception_handler},
    )
