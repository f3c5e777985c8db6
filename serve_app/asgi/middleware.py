"""The ingress's ASGI guard: every route, present or added later, passes through it.

In order, for each HTTP request (:class:`GuardMiddleware`):

1. **Request id**: a sane incoming ``X-Request-ID`` (Serve's proxy always sends
   one) or a fresh id, in ``scope["imagegen.request_id"]`` and in the log context.
2. **Body size**: a declared ``Content-Length`` over the limit is a 413 before a
   byte is read; a streamed body is cut off with 413 as soon as it passes it
   (``common.limits.body_limit``: uploads get ``images.max_upload_bytes``).
3. **Admission**: past ``ingress.max_concurrent_requests`` requests in this replica
   (below the deployment's ``max_ongoing_requests``), a JSON 429 ``overloaded`` with
   ``Retry-After``, at once. Serve's proxy thus never has to shed (its refusal is a
   plain-text 503): every refusal a client sees is an OpenAI error object.
   ``/health`` and ``/ready`` are never refused.
4. **API key**: routes that need one (``serve_app.asgi.auth.needs_api_key``) get a 401
   without a valid Bearer key; a valid one sets ``scope["imagegen.owner"]``.
5. **Errors**: anything a route lets escape becomes a classified error in the
   route's dialect shape (OpenAI, or A1111 under ``/sdapi/``), never a traceback.
6. **Headers** on every response: ``X-Content-Type-Options: nosniff``, a
   ``Content-Security-Policy`` that forbids active content (served images included),
   ``Cache-Control: no-store`` unless the route chose a policy, and ``X-Request-ID``
   when no proxy in front adds it.

CORS (Starlette's ``CORSMiddleware``) wraps it only when ``ingress.cors.allow_origins``
is set, so preflight requests are answered before the key check.
"""

from __future__ import annotations

import logging

from starlette.datastructures import Headers, MutableHeaders
from starlette.middleware import Middleware
from starlette.middleware.cors import CORSMiddleware
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from common import limits
from common.config import ImageInputConfig, IngressConfig
from common.errors import APIError, from_exception
from common.paths import A1111_ROOT
from common.request_context import REQUEST_ID, new_request_id, sane_request_id
from serve_app.asgi.auth import OPEN_PATHS, ApiKeys, needs_api_key
from serve_app.asgi.endpoints import (
    OWNER_SCOPE_KEY,
    REQUEST_ID_SCOPE_KEY,
    error_response,
)
from serve_app.asgi.scheduling import MAX_PRIORITY_SCOPE_KEY

logger = logging.getLogger("imagegen.middleware")

SECURITY_HEADERS = {
    "x-content-type-options": "nosniff",
    "content-security-policy": "default-src 'none'; frame-ancestors 'none'; sandbox",
    "referrer-policy": "no-referrer",
}


def route_path(scope: Scope) -> str:
    """The path below the app's route prefix (Serve mounts apps under ``root_path``)."""
    path: str = scope["path"]
    root: str = scope.get("root_path", "")
    if root and path.startswith(root):
        return path[len(root) :] or "/"
    return path


class GuardMiddleware:
    """Request id, body limit, API key, error shape and response headers (see module)."""

    def __init__(
        self, app: ASGIApp, config: IngressConfig, images: ImageInputConfig, api_keys: ApiKeys
    ) -> None:
        self.app = app
        self.config = config
        self.images = images
        self.api_keys = api_keys
        self.limit = config.admission_limit()
        self.inflight = 0

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = Headers(scope=scope)
        path = route_path(scope)
        shape = "a1111" if path.startswith(A1111_ROOT) else "openai"
        # 1. The request id, for logs, messages and the response.
        incoming = headers.get("x-request-id")
        request_id = sane_request_id(incoming) or new_request_id()
        scope[REQUEST_ID_SCOPE_KEY] = request_id
        token = REQUEST_ID.set(request_id)
        started = False

        async def send_guarded(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
                out = MutableHeaders(scope=message)
                for name, value in SECURITY_HEADERS.items():
                    out.setdefault(name, value)
                out.setdefault("cache-control", "no-store")
                if incoming is None:  # no proxy in front to echo it
                    out.setdefault("x-request-id", request_id)
            await send(message)

        async def reply(err: APIError) -> None:
            await error_response(err, shape)(scope, _no_body, send_guarded)

        try:
            # 2. Body size, before anything reads the body.
            limit = limits.body_limit(self.config, self.images, path, headers.get("content-type"))
            declared = headers.get("content-length")
            if declared is not None and declared.isdigit() and int(declared) > limit.bytes:
                await reply(limits.too_large(limit.bytes, limit.name))
                return
            # 3. Admission: refuse in our own shape before Serve's proxy would.
            counted = path not in OPEN_PATHS
            if counted and self.limit is not None and self.inflight >= self.limit:
                await reply(over_capacity(self.limit))
                return
            # 4. The API key, where the route needs one.
            if self.api_keys.enabled and needs_api_key(path):
                owner = self.api_keys.owner(headers.get("authorization"))
                scope[OWNER_SCOPE_KEY] = owner
                scope[MAX_PRIORITY_SCOPE_KEY] = self.api_keys.max_priority(owner)
            self.inflight += counted
            try:
                await self.app(scope, _bounded(receive, limit), send_guarded)
            finally:
                self.inflight -= counted
        except Exception as exc:  # noqa: BLE001 - 5. classified and answered
            if started:
                logger.warning("request %s failed after its response started", request_id)
                raise
            await reply(from_exception(exc, request_id))
        finally:
            REQUEST_ID.reset(token)


def over_capacity(limit: int) -> APIError:
    return APIError(
        "rate_limited",
        f"This server is handling {limit} requests (ingress.max_concurrent_requests); "
        "retry after a short wait.",
        code="overloaded",
        headers={"retry-after": "1"},
    )


def _bounded(receive: Receive, limit: limits.BodyLimit) -> Receive:
    """``receive`` that raises a 413 once the body passes ``limit`` bytes."""
    total = 0

    async def receive_bounded() -> Message:
        nonlocal total
        message = await receive()
        if message["type"] == "http.request":
            total += len(message.get("body", b""))
            if total > limit.bytes:
                raise limits.too_large(limit.bytes, limit.name)
        return message

    return receive_bounded


async def _no_body() -> Message:
    return {"type": "http.request", "body": b"", "more_body": False}


def ingress_middleware(
    config: IngressConfig, images: ImageInputConfig, api_keys: ApiKeys
) -> list[Middleware]:
    """The ingress's middleware stack, outermost first."""
    stack = []
    cors = config.cors
    if cors.allow_origins:
        stack.append(
            Middleware(
                CORSMiddleware,
                allow_origins=cors.allow_origins,
                allow_methods=cors.allow_methods,
                allow_headers=cors.allow_headers,
                allow_credentials=cors.allow_credentials,
                expose_headers=[
                    "x-request-id",
                    "retry-after",
                    "x-imagegen-seeds",
                    "x-imagegen-priority",
                    "x-imagegen-paused-ms",
                ],
                max_age=cors.max_age_s,
            )
        )
    stack.append(Middleware(GuardMiddleware, config=config, images=images, api_keys=api_keys))
    return stack
