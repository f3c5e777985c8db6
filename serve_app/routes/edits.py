"""``POST /v1/images/edits`` and ``POST /v1/images/variations`` (multipart), and edits as
OpenAI's JSON body too (``images: [{"image_url": ...}]``, ``dialects/openai_edits_json.py``).

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

from serve_app.asgi.endpoints import Endpoint, api_endpoint, read_json
from serve_app.asgi.openapi import ApiRoute, Operation
from serve_app.dialects.base import Dialect
from serve_app.dialects.openai_edits import EDITS, VARIATIONS
from serve_app.dialects.openai_edits_json import EDITS_JSON
from serve_app.inputs.fetch import ImageFetcher
from serve_app.inputs.uploads import read_form
from serve_app.routes.answer import answer, context, translate

if TYPE_CHECKING:
    from serve_app.ingress import Ingress


def is_json(request: Request) -> bool:
    return request.headers.get("content-type", "").split(";")[0].strip().lower() == (
        "application/json"
    )


def routes(ingress: Ingress) -> list[BaseRoute]:
    fetcher = ImageFetcher(ingress.args.images)

    def endpoint(dialect: Dialect[Any, dict[str, Any]]) -> Endpoint:
        async def handle(request: Request) -> Response:
            ctx = context(ingress, request, fetcher)
            if dialect is EDITS and is_json(request):
                body = await read_json(request)
                model, plan = await translate(ingress, EDITS_JSON, body, ctx)
            else:
                items = await read_form(request, ingress.args.images)
                model, plan = await translate(ingress, dialect, items, ctx)
            return await answer(ingress, model, plan)

        return api_endpoint(handle)

    return [
        ApiRoute(
            "/v1/images/edits",
            endpoint(EDITS),
            "POST",
            Operation(
                "Edit an image: img2img, or inpainting with a mask (multipart, or JSON with "
                "images[].image_url)"
            ),
        ),
        ApiRoute(
            "/v1/images/variations",
            endpoint(VARIATIONS),
            "POST",
            Operation("Variations of an image (multipart)"),
        ),
    ]
