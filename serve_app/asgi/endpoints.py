"""Starlette plumbing shared by all routes: bounded body reads, JSON parsing, error replies."""

from __future__ import annotations

import functools
import logging
from collections.abc import Awaitable, Callable
from typing import Any, Literal

from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from common import limits
from common.errors import APIError, from_exception, invalid
from common.paths import A1111_ROOT
from common.request_context import new_request_id, sane_request_id

logger = logging.getLogger("imagegen.http")

Endpoint = Callable[[Request], Awaitable[Response]]
REQUEST_ID_HEADER = "x-request-id"
REQUEST_ID_SCOPE_KEY = "imagegen.request_id"


def request_id_of(request: Request) -> str:
    """The request's id: set by ``serve_app.asgi.middleware`` (the proxy's ``X-Request-ID``
    when sane, see ``common.request_context``), else a fresh one."""
    rid = request.scope.get(REQUEST_ID_SCOPE_KEY)
    if rid is None:
        rid = sane_request_id(request.headers.get(REQUEST_ID_HEADER)) or new_request_id()
        request.scope[REQUEST_ID_SCOPE_KEY] = rid
    return rid


ErrorShape = Literal["openai", "a1111"]


DEFAULT_OWNER = "default"
OWNER_SCOPE_KEY = "imagegen.owner"


def owner_of(request: Request) -> str:
    """Whose stored images this request may see.

    The seam for API keys: authentication middleware sets ``scope["imagegen.owner"]``
    to an opaque id for the caller's key (``[A-Za-z0-9_-]{1,64}``, e.g. a hash prefix).
    Until keys exist, every request belongs to the single default owner.
    """
    return request.scope.get(OWNER_SCOPE_KEY, DEFAULT_OWNER)


def error_response(err: APIError, shape: ErrorShape = "openai") -> JSONResponse:
    body = err.a1111_body() if shape == "a1111" else err.body()
    return JSONResponse(body, status_code=err.status, headers=err.headers)


def api_endpoint(fn: Endpoint, shape: ErrorShape = "openai") -> Endpoint:
    """Wrap a route so every failure leaves as a classified error, never a traceback.

    ``shape`` picks the error body: OpenAI's (also Together's and imagine's) or A1111's.
    """

    @functools.wraps(fn)
    async def wrapper(request: Request) -> Response:
        try:
            return await fn(request)
        except Exception as exc:  # noqa: BLE001 - classified, logged, and answered
            return error_response(from_exception(exc, request_id_of(request)), shape)

    return wrapper


async def read_body(request: Request) -> bytes:
    """The whole body. Its size is bounded before any route reads it: the ingress's
    ``GuardMiddleware`` refuses with 413 past ``limits.body_limit`` for the route."""
    return await request.body()


async def read_json(request: Request) -> Any:
    """The body as strict JSON (``common.limits.parse_json``)."""
    body = await read_body(request)
    if not body:
        raise invalid("The request body is empty; send a JSON object.", code="invalid_json")
    return limits.parse_json(body)


async def http_exception_handler(request: Request, exc: Exception) -> Response:
    """Router-level 404/405 in the OpenAI shape."""
    assert isinstance(exc, HTTPException)
    if exc.status_code == 405:
        err = APIError(
            "method_not_allowed",
            f"Method {request.method} is not allowed for {request.url.path}.",
            code="method_not_allowed",
        )
    elif exc.status_code == 404:
        err = APIError(
            "not_found",
            f"Unknown route {request.method} {request.url.path}.",
            code="unknown_url",
        )
    else:
        err = APIError("invalid_request", str(exc.detail))
    return error_response(err, "a1111" if request.url.path.startswith(A1111_ROOT) else "openai")


def generation_headers(seeds: tuple[int, ...], model_id: str) -> dict[str, str]:
    """Headers every generating route sends: each image's seed and the model that ran."""
    return {"x-imagegen-seeds": ",".join(map(str, seeds)), "x-imagegen-model": model_id}
