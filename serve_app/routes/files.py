"""Image bytes the ingress serves without API credentials.

- ``GET /v1/images/files/{key}?expires=&signature=``: the local store's ``url`` output,
  valid only with an unexpired HMAC signature. (The S3 store's URLs point at S3.)
- ``GET /v1/images/public/{token}.{ext}``: published imagine images, on every backend,
  for as long as they stay published.
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute

from common.errors import APIError
from serve_app.asgi.endpoints import api_endpoint
from serve_app.asgi.openapi import ApiRoute, Operation
from storage.base import content_type_for, is_image_key
from storage.local import FILES_ROUTE, LocalImageStore

if TYPE_CHECKING:
    from serve_app.ingress import Ingress

PUBLIC_ROUTE = "/v1/images/public"
_NOSNIFF = {"x-content-type-options": "nosniff"}


def _not_found() -> APIError:
    return APIError("not_found", "No such image.", code="image_not_found")


def routes(ingress: Ingress) -> list[BaseRoute]:
    async def get_file(request: Request) -> Response:
        key = request.path_params["key"]
        store = ingress.store
        # Only the local store mints these URLs; keys failing the pattern (e.g. "..") stop here.
        if not isinstance(store, LocalImageStore) or not is_image_key(key):
            raise _not_found()
        # The signature is checked before existence, so probes learn nothing.
        reason = store.signer.verify(
            key, request.query_params.get("expires", ""), request.query_params.get("signature", "")
        )
        if reason:
            raise APIError(
                "permission_denied", f"This image URL is not valid ({reason}).", code="invalid_url"
            )
        data = await asyncio.to_thread(store.get, key)
        if data is None:
            raise _not_found()
        headers = {"cache-control": "private, max-age=3600", **_NOSNIFF}
        return Response(data, media_type=content_type_for(key), headers=headers)

    async def get_public(request: Request) -> Response:
        name = request.path_params["name"]
        if not is_image_key(name):
            raise _not_found()
        data = await asyncio.to_thread(ingress.catalog.read_public, name)
        if data is None:
            raise _not_found()
        # Revalidate every time: unpublishing must take effect for caches too.
        headers = {"cache-control": "public, no-cache", **_NOSNIFF}
        return Response(data, media_type=content_type_for(name), headers=headers)

    return [
        ApiRoute(
            FILES_ROUTE + "/{key:path}",
            api_endpoint(get_file),
            "GET",
            Operation(
                "An image returned as a signed URL",
                binary=True,
                query={"expires": {"type": "string"}, "signature": {"type": "string"}},
            ),
        ),
        ApiRoute(
            PUBLIC_ROUTE + "/{name}",
            api_endpoint(get_public),
            "GET",
            Operation("A published image", binary=True),
        ),
    ]
