"""``POST /v1/images/edits`` and ``POST /v1/images/variations`` (multipart).

Images come as ``image`` or ``image[]`` (the openai SDK sends a list as ``image[]``,
Open WebUI sends ``image[]`` even for one image; both are accepted, mixed too), up
to ``images.max_input_images``. Every image is decoded and checked; the first is the
init image (SDXL img2img takes one). ``mask`` turns the edit into inpainting. The
form's translation is ``dialects/openai_edits.py``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute

from serve_app.asgi.endpoints import Endpoint, api_endpoint
from serve_app.asgi.openapi import ApiRoute, Operation
from serve_app.dialects.base import Dialect
from serve_app.dialects.openai_edits import EDITS, VARIATIONS
from serve_app.inputs.uploads import read_form
from serve_app.routes.answer import answer, context, translate

if TYPE_CHECKING:
    from serve_app.ingress import Ingress


def routes(ingress: Ingress) -> list[BaseRoute]:
    def endpoint(dialect: Dialect[Any, dict[str, Any]]) -> Endpoint:
        async def handle(request: Request) -> Response:
            items = await read_form(request, ingress.args.images)
            model, plan = await translate(ingress, dialect, items, context(ingress, request))
            return await answer(ingress, model, plan)

        return api_endpoint(handle)

    return [
        ApiRoute(
            "/v1/images/edits",
            endpoint(EDITS),
            "POST",
            Operation("Edit an image: img2img, or inpainting with a mask (multipart)"),
        ),
        ApiRoute(
            "/v1/images/variations",
            endpoint(VARIATIONS),
            "POST",
            Operation("Variations of an image (multipart)"),
        ),
    ]
