"""``GET /openapi.json``: an OpenAPI 3.1 document for every route the ingress serves.

The document is built from the live route table: every route is listed with its
path parameters, methods, the error responses every route shares and whether it
needs an API key (:func:`serve_app.asgi.auth.needs_api_key`, the middleware's own
rule). What only a person can say, the summary, the request body and the 200
response, each route module declares next to the route itself (:class:`ApiRoute`
with an :class:`Operation`); the schemas are generated from the protocol's pydantic
models, never written by hand. ``docs/openapi.json`` is this document for
``serve_config.yaml``, written by ``python -m serve_app.routes.openapi_export``.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from pydantic import BaseModel
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Route

from common.errors import ErrorResponse
from serve_app.asgi.auth import needs_api_key
from serve_app.asgi.endpoints import Endpoint

OPENAPI_PATH = "/openapi.json"
REF = "#/components/schemas/{model}"
_PARAM = re.compile(r"\{([A-Za-z_][A-Za-z0-9_]*)(?::([A-Za-z_]+))?\}")
# Path convertor -> schema of the parameter.
_CONVERTOR_SCHEMAS: dict[str, dict[str, Any]] = {
    "image_id": {"type": "string", "pattern": "^image_[A-Za-z0-9]{1,64}$"},
    "int": {"type": "integer", "minimum": 0},
}


@dataclass(frozen=True)
class Operation:
    """What the route table cannot tell about one operation: declared by the route
    module next to its :class:`ApiRoute`, so the document cannot miss a route."""

    summary: str
    request: type[BaseModel] | None = None
    response: type[BaseModel] | None = None
    # 200 may also be server-sent events (stream=true).
    streams: bool = False
    query: dict[str, dict[str, Any]] = field(default_factory=dict)
    binary: bool = False
    # Answered with 202 (an accepted async job) instead of 200.
    accepted: bool = False


class ApiRoute(Route):
    """A Starlette ``Route`` for one method that carries its own :class:`Operation`.

    Every route of the ingress is one of these (a unit test checks it); a plain
    ``Route`` is still listed, with a generic summary and no body schemas.
    """

    def __init__(self, path: str, endpoint: Endpoint, method: str, operation: Operation) -> None:
        super().__init__(path, endpoint, methods=[method])
        self.operation = operation


ERROR_STATUSES = ("400", "401", "403", "404", "405", "413", "422", "429", "503", "504")
# One server-sent event: its name and its JSON data (a partial or completed image, or
# an ``error`` with the OpenAI error object).
SSE_EVENT = {
    "type": "object",
    "properties": {"event": {"type": "string"}, "data": {"type": "string"}},
    "required": ["event", "data"],
}
A1111_ERROR = {
    "type": "object",
    "properties": {
        "error": {"type": "string"},
        "detail": {"type": "string"},
        "body": {"type": "string"},
        "errors": {"type": "string"},
    },
    "required": ["error", "detail"],
}


def build_document(routes: Sequence[BaseRoute], title: str = "imagegen-serve") -> dict[str, Any]:
    """The OpenAPI document for ``routes`` (Starlette ``Route`` objects; others, and
    routes with ``include_in_schema=False`` such as the playground's page, skipped)."""
    schemas: dict[str, Any] = {}
    paths: dict[str, dict[str, Any]] = {}
    for route in routes:
        if not isinstance(route, Route) or route.methods is None or not route.include_in_schema:
            continue
        path, params = _openapi_path(route.path)
        for method in sorted(route.methods - {"HEAD"}):
            op = route.operation if isinstance(route, ApiRoute) else None
            entry = _operation(method, path, params, op, schemas)
            paths.setdefault(path, {})[method.lower()] = entry
    paths[OPENAPI_PATH] = {
        "get": {"summary": "This document", "responses": {"200": _json({"type": "object"})}}
    }
    return {
        "openapi": "3.1.0",
        "info": {"title": title, "version": "1"},
        "paths": paths,
        "components": {
            "schemas": schemas,
            "securitySchemes": {"apiKey": {"type": "http", "scheme": "bearer"}},
        },
    }


def _openapi_path(path: str) -> tuple[str, list[dict[str, Any]]]:
    params = []
    for name, convertor in _PARAM.findall(path):
        schema = _CONVERTOR_SCHEMAS.get(convertor, {"type": "string", "minLength": 1})
        params.append({"name": name, "in": "path", "required": True, "schema": schema})
    return _PARAM.sub(r"{\1}", path), params


def _operation(
    method: str,
    path: str,
    params: list[dict[str, Any]],
    op: Operation | None,
    schemas: dict[str, Any],
) -> dict[str, Any]:
    a1111 = path.startswith("/sdapi/")
    error = A1111_ERROR if a1111 else _ref(ErrorResponse, schemas)
    query = [
        {"name": name, "in": "query", "required": False, "schema": schema}
        for name, schema in (op.query if op else {}).items()
    ]
    ok: dict[str, Any] = {"description": "Success"}
    if op is not None and op.binary:
        ok["content"] = {"image/*": {"schema": {"type": "string", "format": "binary"}}}
    else:
        body = _ref(op.response, schemas) if op and op.response else {}
        ok["content"] = {"application/json": {"schema": body}}
        if op is not None and op.streams:
            ok["content"]["text/event-stream"] = {"schema": SSE_EVENT}
    operation: dict[str, Any] = {
        "summary": op.summary if op else f"{method} {path}",
        "parameters": params + query,
        "responses": {
            "202" if op is not None and op.accepted else "200": ok,
            **{s: _json(error, "Error") for s in ERROR_STATUSES},
        },
    }
    if op is not None and op.request is not None:
        operation["requestBody"] = {
            "required": True,
            "content": {"application/json": {"schema": _ref(op.request, schemas, True)}},
        }
    if needs_api_key(path):
        operation["security"] = [{"apiKey": []}]
    return operation


def _ref(model: type[BaseModel], schemas: dict[str, Any], request: bool = False) -> dict[str, Any]:
    schema = model.model_json_schema(ref_template=REF, mode="validation")
    schemas.update(schema.pop("$defs", {}))
    schemas[model.__name__] = _nulls_allowed(schema) if request else schema
    return {"$ref": REF.format(model=model.__name__)}


def _nulls_allowed(schema: dict[str, Any]) -> dict[str, Any]:
    """A request body's optional members also take ``null``, which means the default in
    every JSON dialect (``common.errors.drop_nulls``), as the document must say."""
    required = set(schema.get("required", ()))
    for name, prop in schema.get("properties", {}).items():
        if name in required or _takes_null(prop):
            continue
        outer = {k: prop.pop(k) for k in ("title", "description", "default") if k in prop}
        schema["properties"][name] = {"anyOf": [prop, {"type": "null"}], **outer}
    return schema


def _takes_null(prop: dict[str, Any]) -> bool:
    return prop.get("type") == "null" or any(
        option.get("type") == "null" for option in prop.get("anyOf", ())
    )


def _json(schema: dict[str, Any], description: str = "Success") -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": schema}}}


def openapi_route(routes: Sequence[BaseRoute]) -> Route:
    """``GET /openapi.json``, built once from ``routes`` (open: no API key)."""
    document = build_document(routes)

    async def openapi(request: Request) -> Response:
        return JSONResponse(document)

    return Route(OPENAPI_PATH, openapi, methods=["GET"])
