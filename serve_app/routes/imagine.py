"""The imagine images API: named Image objects kept in the image store.

``POST /v1/images/imagine``, ``GET /v1/images``, ``GET|DELETE /v1/images/{id}``,
``POST /v1/images/{id}/publish|unpublish`` and ``GET /v1/images/{id}/download``.
Every route sees only the caller's images (:func:`serve_app.asgi.endpoints.owner_of`).
Store calls block (files, boto3), so they run in a worker thread.

The ``{id}`` routes match only ``image_…`` ids (:class:`ImageIdRoute`), so
``/v1/images/generations`` and ``/v1/images/files/…`` keep their own routes and a
``GET /v1/images/generations`` is still a 405, not "no such image".
"""

from __future__ import annotations

import asyncio
import re
from typing import TYPE_CHECKING
from urllib.parse import quote

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Match
from starlette.types import Scope

from common.errors import APIError
from common.formats import CONTENT_TYPES
from serve_app.asgi.endpoints import Endpoint, api_endpoint, owner_of, read_json
from serve_app.asgi.openapi import ApiRoute, Operation
from serve_app.dialects import imagine_api as imagine
from serve_app.protocol.imagine import ImageList, ImageObject, ImagineRequest
from serve_app.routes.answer import context, translate
from serve_app.routes.files import PUBLIC_ROUTE
from storage.catalog import ImageRecord

if TYPE_CHECKING:
    from serve_app.ingress import Ingress


IMAGE_ID = re.compile(r"image_[A-Za-z0-9]{1,64}")
# The documented path: ``{image_id:image_id}`` tells the OpenAPI document (its
# ``image_id`` parameter schema) which values match. Starlette itself only ever
# compiles the plain ``{image_id}``; ImageIdRoute checks the value.
BY_ID = "/v1/images/{image_id:image_id}"


class ImageIdRoute(ApiRoute):
    """An :class:`ApiRoute` whose ``{image_id}`` matches only image ids.

    A local rule rather than a Starlette convertor, which would have to be registered
    in Starlette's process-wide table at import time. Any other segment is no match
    at all, so ``GET /v1/images/generations`` still reaches that route (a 405).
    """

    def __init__(self, path: str, endpoint: Endpoint, method: str, operation: Operation) -> None:
        super().__init__(
            path.replace("{image_id:image_id}", "{image_id}"), endpoint, method, operation
        )
        self.path = path  # what the OpenAPI document reads; matching uses the compiled regex

    def matches(self, scope: Scope) -> tuple[Match, Scope]:
        match, child = super().matches(scope)
        if match is not Match.NONE and not IMAGE_ID.fullmatch(child["path_params"]["image_id"]):
            return Match.NONE, {}
        return match, child


CREATE = Operation("Generate one stored Image object", ImagineRequest, ImageObject)
LIST = Operation(
    "List stored images, newest first",
    response=ImageList,
    query={
        "limit": {"type": "integer", "minimum": 1, "maximum": 100},
        "after": {"type": "string"},
        "name": {"type": "string", "minLength": 1, "maxLength": 256},
    },
)


def routes(ingress: Ingress) -> list[BaseRoute]:
    catalog = ingress.catalog

    def public_url(request: Request, record: ImageRecord) -> str | None:
        if record.public_name is None:
            return None
        return f"{ingress.base_url(request).rstrip('/')}{PUBLIC_ROUTE}/{record.public_name}"

    def reply(request: Request, record: ImageRecord) -> Response:
        return JSONResponse(imagine.to_object(record, public_url(request, record)).model_dump())

    async def find(request: Request) -> ImageRecord:
        image_id = request.path_params["image_id"]
        record = await asyncio.to_thread(catalog.get, owner_of(request), image_id)
        if record is None:
            raise APIError(
                "not_found", f"No image with id '{image_id}'.", param="id", code="image_not_found"
            )
        return record

    async def create(request: Request) -> Response:
        # 1. Validate and translate, 2. generate and store the bytes (encoder),
        # 3. write the record.
        body = await read_json(request)
        model, plan = await translate(ingress, imagine.DIALECT, body, context(ingress, request))
        record = plan.respond(await ingress.generate_images(model, plan.job, plan.spec))
        try:
            await asyncio.to_thread(catalog.save, record)
        except Exception:  # no record, so no orphaned bytes either
            await asyncio.to_thread(ingress.store.delete, plan.spec.store_keys[0])
            raise
        return reply(request, record)

    async def list_images(request: Request) -> Response:
        limit, after, name = imagine.parse_list_query(dict(request.query_params))
        records, has_more = await asyncio.to_thread(
            catalog.list, owner_of(request), limit, after, name
        )
        page = ImageList(
            data=[imagine.to_object(r, public_url(request, r)) for r in records],
            first_id=records[0].id if records else None,
            last_id=records[-1].id if records else None,
            has_more=has_more,
        )
        return JSONResponse(page.model_dump())

    async def get_image(request: Request) -> Response:
        return reply(request, await find(request))

    async def publish(request: Request) -> Response:
        record = await find(request)
        published = await asyncio.to_thread(catalog.publish, record)
        if published is None:
            raise APIError("not_found", "The image's bytes are gone.", code="image_not_found")
        return reply(request, published)

    async def unpublish(request: Request) -> Response:
        record = await find(request)
        return reply(request, await asyncio.to_thread(catalog.unpublish, record))

    async def download(request: Request) -> Response:
        record = await find(request)
        data = await asyncio.to_thread(catalog.read, record)
        if data is None:
            raise APIError("not_found", "The image's bytes are gone.", code="image_not_found")
        return Response(
            data,
            media_type=CONTENT_TYPES[record.format],
            headers={
                "content-disposition": _attachment(record),
                "cache-control": "private, no-store",
                "x-content-type-options": "nosniff",
            },
        )

    async def delete(request: Request) -> Response:
        record = await find(request)
        await asyncio.to_thread(catalog.delete, record)
        return JSONResponse({"id": record.id, "object": "image", "deleted": True})

    return [
        ApiRoute("/v1/images/imagine", api_endpoint(create), "POST", CREATE),
        ApiRoute("/v1/images", api_endpoint(list_images), "GET", LIST),
        ImageIdRoute(
            BY_ID,
            api_endpoint(get_image),
            "GET",
            Operation("One stored image", response=ImageObject),
        ),
        ImageIdRoute(BY_ID, api_endpoint(delete), "DELETE", Operation("Delete a stored image")),
        ImageIdRoute(
            BY_ID + "/publish",
            api_endpoint(publish),
            "POST",
            Operation("Publish", response=ImageObject),
        ),
        ImageIdRoute(
            BY_ID + "/unpublish",
            api_endpoint(unpublish),
            "POST",
            Operation("Unpublish", response=ImageObject),
        ),
        ImageIdRoute(
            BY_ID + "/download",
            api_endpoint(download),
            "GET",
            Operation("The image's bytes", binary=True),
        ),
    ]


def _attachment(record: ImageRecord) -> str:
    """``Content-Disposition`` with the image's name: an ASCII fallback and RFC 5987 UTF-8."""
    filename = f"{record.name}.{record.format}"
    fallback = "".join(
        c if c.isascii() and c.isprintable() and c not in '"\\' else "_" for c in filename
    )
    return f"attachment; filename=\"{fallback}\"; filename*=UTF-8''{quote(filename, safe='')}"
