"""``GET /v1/images/files/{key}``: images returned as signed, expiring URLs."""

from __future__ import annotations

from typing import TYPE_CHECKING

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from deployments.storage import FILES_ROUTE, content_type_for
from serve_app.errors import APIError
from serve_app.http import api_endpoint

if TYPE_CHECKING:
    from serve_app.ingress import Ingress


def routes(ingress: Ingress) -> list[BaseRoute]:
    async def get_file(request: Request) -> Response:
        key = request.path_params["key"]
        store = ingress.store
        if not store.valid_key(key):
            raise APIError("not_found", "No such image.", code="image_not_found")
        # The signature is checked before existence, so probes learn nothing.
        reason = store.signer.verify(
            key, request.query_params.get("expires", ""), request.query_params.get("signature", "")
        )
        if reason:
            raise APIError(
                "permission_denied", f"This image URL is not valid ({reason}).", code="invalid_url"
            )
        data = store.get(key)
        if data is None:
            raise APIError("not_found", "No such image.", code="image_not_found")
        headers = {"cache-control": "private, max-age=3600", "x-content-type-options": "nosniff"}
        return Response(data, media_type=content_type_for(key), headers=headers)

    return [Route(FILES_ROUTE + "/{key}", api_endpoint(get_file), methods=["GET"])]
