"""Every HTTP route of the ingress, one module per API surface."""

from __future__ import annotations

from typing import TYPE_CHECKING

from starlette.routing import BaseRoute

from serve_app.routes import a1111, edits, files, generations, imagine, openai_images, system

if TYPE_CHECKING:
    from serve_app.ingress import Ingress


def all_routes(ingress: Ingress) -> list[BaseRoute]:
    """Specific paths come before parameterised ones (Starlette matches in order)."""
    return [
        *generations.routes(ingress),
        *edits.routes(ingress),
        *openai_images.routes(ingress),
        *a1111.routes(ingress),
        *files.routes(ingress),
        *imagine.routes(ingress),
        *system.routes(ingress),
    ]
