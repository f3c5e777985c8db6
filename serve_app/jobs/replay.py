"""A job's request: captured from the HTTP request at submit, replayed into its route.

At submit, :func:`capture` keeps what the wrapped route reads (``StoredRequest``: the
route, scheme, host, headers without credentials, the owner, its key's highest
priority class and the request id, and the body: JSON as sent, multipart as its
parts with each file apart). Any ingress replica can then rebuild the request with
:func:`stored_call` and run the route's own code on it, on the first attempt as on a
takeover after the first replica died.
A multipart body is encoded again by urllib3 (``encode_multipart_formdata``).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from starlette.requests import Request
from starlette.responses import Response
from urllib3 import encode_multipart_formdata

from common.errors import invalid
from serve_app.asgi.endpoints import OWNER_SCOPE_KEY, REQUEST_ID_SCOPE_KEY
from serve_app.asgi.scheduling import ASYNC_JOB_SCOPE_KEY, MAX_PRIORITY_SCOPE_KEY
from storage.job_requests import FormPart, StoredRequest, UploadedFile

Endpoint = Callable[[Request], Awaitable[Response]]
# Never kept: credentials (the owner is kept instead), the async preference, and the
# framing of a body that is encoded again.
DROPPED_HEADERS = frozenset(
    {"authorization", "cookie", "prefer", "content-length", "transfer-encoding", "expect"}
)
CONTEXT_KEYS = (OWNER_SCOPE_KEY, REQUEST_ID_SCOPE_KEY, MAX_PRIORITY_SCOPE_KEY)
FILE_NAME = "upload"


@dataclass
class StoredCall:
    """A request to replay into a route: its scope (path set to the route) and body."""

    endpoint: Endpoint
    scope: dict[str, Any]
    body: bytes

    def request(self) -> Request:
        sent = False

        async def receive() -> dict[str, Any]:
            nonlocal sent
            if not sent:
                sent = True
                return {"type": "http.request", "body": self.body, "more_body": False}
            await asyncio.Event().wait()  # never a disconnect: the job owns the request
            raise AssertionError("unreachable")

        return Request(self.scope, receive)


def capture(
    request: Request,
    endpoint: str,
    body: bytes,
    form: list[tuple[str, object]] | None,
) -> tuple[StoredRequest, list[FormPart | UploadedFile] | None]:
    """What to store for ``request`` (sent to ``endpoint``), and its multipart parts."""
    scope = request.scope
    headers = [
        (k.decode("latin-1"), v.decode("latin-1"))
        for k, v in scope["headers"]
        if k.decode("latin-1").lower() not in DROPPED_HEADERS
    ]
    server = scope.get("server")
    try:
        text = body.decode("utf-8") if form is None else None
    except UnicodeDecodeError:  # json.loads also takes UTF-16/32; a stored job does not
        raise invalid("An async job's JSON body must be UTF-8.", code="invalid_json") from None
    stored = StoredRequest(
        endpoint=endpoint,
        scheme=scope.get("scheme", "http"),
        server=(str(server[0]), int(server[1])) if server and server[1] is not None else None,
        root_path=scope.get("root_path", ""),
        headers=[(k, v) for k, v in headers if form is None or k.lower() != "content-type"],
        context={k: str(scope[k]) for k in CONTEXT_KEYS if k in scope},
        body=text,
    )
    if form is None:
        return stored, None
    parts: list[FormPart | UploadedFile] = [
        UploadedFile(name=name, data=value)
        if isinstance(value, bytes)
        else FormPart(name=name, value=str(value))
        for name, value in form
    ]
    return stored, parts


def stored_call(endpoint: Endpoint, stored: StoredRequest, files: dict[str, bytes]) -> StoredCall:
    """The request to run again: ``files`` holds the stored input files by key."""
    headers = [(k.encode("latin-1"), v.encode("latin-1")) for k, v in stored.headers]
    if stored.form is None:
        body = (stored.body or "").encode("utf-8")
    else:
        fields: list[tuple[str, Any]] = [
            (part.name, (FILE_NAME, files[part.file_key], "application/octet-stream"))
            if part.file_key is not None
            else (part.name, part.value or "")
            for part in stored.form
        ]
        body, content_type = encode_multipart_formdata(fields)
        headers.append((b"content-type", content_type.encode("latin-1")))
    headers.append((b"content-length", str(len(body)).encode()))
    scope: dict[str, Any] = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "POST",
        "scheme": stored.scheme,
        "server": stored.server,
        "root_path": stored.root_path,
        "path": stored.endpoint,
        "raw_path": stored.endpoint.encode(),
        "query_string": b"",
        "headers": headers,
        "path_params": {},
        **stored.context,
        ASYNC_JOB_SCOPE_KEY: True,  # the batch class by default, and no deadline
    }
    return StoredCall(endpoint, scope, body)


def file_keys(stored: StoredRequest) -> list[str]:
    return [p.file_key for p in stored.form or () if p.file_key is not None]
