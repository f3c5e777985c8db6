"""The imagine images API: named Image objects kept in the image store.

``POST /v1/images/imagine``, ``GET /v1/images``, ``GET|DELETE /v1/images/{id}``,
``POST /v1/images/{id}/publish|unpublish`` and ``GET /v1/images/{id}/download``.
Every route sees only the caller's images (:func:`serve_app.asgi.endpoints.owner_of`).
Store calls block (files, boto3), so they run in a worker thread.

The ``{id}`` routes match only ``image_…`` ids (a Starlette convertor), so
``/v1/images/generations`` and ``/v1/images/files/…`` keep their own routes and a
``GET /v1/images/generations`` is still a 405, not "no such image".
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING
from urllib.parse import quote

from starlette.convertors import Convertor, register_url_convertor
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute

from common.errors import APIError
from common.formats import CONTENT_TYPES
from serve_app.asgi.endpoints import api_endpoint, owner_of, read_json, request_id_of
from serve_app.asgi.openapi import ApiRoute, Operation
from serve_app.dialects import imagine_api as imagine
from serve_app.protocol.imagine import ImageList, ImageObject, ImagineRequest
from serve_app.routes.files import PUBLIC_ROUTE
from storage.base import image_data_key
from storage.catalog import ImageRecord, new_image_id

if TYPE_CHECKING:
    from serve_app.ingress import Ingress


class ImageIdConvertor(Convertor[str]):
    regex = "image_[A-Za-z0-9]{1,64}"

    def convert(self, value: str) -> str:
        return value

    def to_string(self, value: str) -> str:
        return value


register_url_convertor("image_id", ImageIdConvertor())
BY_ID = "/v1/images/{image_id:image_id}"
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
        # 1. Validate, 2. generate and store the bytes (encoder), 3. write the record.
        request_id = request_id_of(request)
        body = await read_json(request)
        req = imagine.parse_imagine(body)
        model = ingress.resolve_model(req.model)
        owner = owner_of(request)
        image_id = new_image_id()
        data_key = image_data_key(owner, image_id, req.output_format)
        job, spec = imagine.to_job_and_spec(req, model, request_id, data_key)
        [image] = await ingress.generate_images(model, job, spec)
        record = imagine.new_record(req, owner, model, image_id, job.seeds[0], image.byte_size)
        try:
            await asyncio.to_thread(catalog.save, record)
        except Exception:  # no record, so no orphaned bytes either
            await asyncio.to_thread(ingress.store.delete, data_key)
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
        ApiRoute(
            BY_ID,
            api_endpoint(get_image),
            "GET",
            Operation("One stored image", response=ImageObject),
        ),
        ApiRoute(BY_ID, api_endpoint(delete), "DELETE", Operation("Delete a stored image")),
        ApiRoute(
            BY_ID + "/publish",
            api_endpoint(publish),
            "POST",
            Operation("Publish", response=ImageObject),
        ),
        ApiRoute(
            BY_ID + "/unpublish",
            api_endpoint(unpublish),
            "POST",
            Operation("Unpublish", response=ImageObject),
        ),
        ApiRoute(
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
