"""``GET /openapi.json``: an OpenAPI 3.1 document for every route the ingress serves.

The document is built from the live route table, so a route added later is listed
without asking (its path parameters, methods and the error responses every route
shares). :data:`OPERATIONS` adds what only a person can say: the request body and
the 200 response, as JSON schemas generated from the protocol's pydantic models,
never written by hand. A new route gets precise schemas with one entry there.
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
from serve_app.protocol.a1111 import Txt2ImgRequest
from serve_app.protocol.imagine import ImageList, ImageObject, ImagineRequest
from serve_app.protocol.openai import ImageGenerateRequest, ImagesResponse, ModelCard
from serve_app.protocol.openai import ModelList as ModelListResponse

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
    """What the route table cannot tell about one operation."""

    summary: str
    request: type[BaseModel] | None = None
    response: type[BaseModel] | None = None
    # 200 may also be server-sent events (stream=true).
    streams: bool = False
    query: dict[str, dict[str, Any]] = field(default_factory=dict)
    binary: bool = False


OPERATIONS: dict[tuple[str, str], Operation] = {
    ("POST", "/v1/images/generations"): Operation(
        "Generate images (OpenAI dialect shown; Together and imagine bodies are accepted "
        "too, see the README)",
        ImageGenerateRequest,
        ImagesResponse,
        streams=True,
    ),
    ("GET", "/v1/models"): Operation("List models and aliases", response=ModelListResponse),
    ("GET", "/v1/models/{model}"): Operation("One model or alias", response=ModelCard),
    ("GET", "/v1/loras"): Operation(
        "List LoRA adapters (name, source, rank, size, target model)",
        query={"model": {"type": "string"}, "refresh": {"type": "string", "enum": ["true"]}},
    ),
    ("POST", "/v1/images/imagine"): Operation(
        "Generate one stored Image object", ImagineRequest, ImageObject
    ),
    ("GET", "/v1/images"): Operation(
        "List stored images, newest first",
        response=ImageList,
        query={
            "limit": {"type": "integer", "minimum": 1, "maximum": 100},
            "after": {"type": "string"},
            "name": {"type": "string", "minLength": 1, "maxLength": 256},
        },
    ),
    ("GET", "/v1/images/{image_id}"): Operation("One stored image", response=ImageObject),
    ("POST", "/v1/images/{image_id}/publish"): Operation("Publish", response=ImageObject),
    ("POST", "/v1/images/{image_id}/unpublish"): Operation("Unpublish", response=ImageObject),
    ("GET", "/v1/images/{image_id}/download"): Operation("The image's bytes", binary=True),
    ("GET", "/v1/images/files/{key}"): Operation(
        "An image returned as a signed URL",
        binary=True,
        query={"expires": {"type": "string"}, "signature": {"type": "string"}},
    ),
    ("GET", "/v1/images/public/{name}"): Operation("A published image", binary=True),
    ("POST", "/sdapi/v1/txt2img"): Operation("AUTOMATIC1111 txt2img", Txt2ImgRequest),
}
OPEN_OPERATIONS = ("/health", "/ready", OPENAPI_PATH, "/sdapi/", "/v1/images/files/")
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
    """The OpenAPI document for ``routes`` (Starlette ``Route`` objects; others skipped)."""
    schemas: dict[str, Any] = {}
    paths: dict[str, dict[str, Any]] = {}
    for route in routes:
        if not isinstance(route, Route) or route.methods is None:
            continue
        path, params = _openapi_path(route.path)
        for method in sorted(route.methods - {"HEAD"}):
            op = OPERATIONS.get((method, path))
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
        "responses": {"200": ok, **{s: _json(error, "Error") for s in ERROR_STATUSES}},
    }
    if op is not None and op.request is not None:
        operation["requestBody"] = {
            "required": True,
            "content": {"application/json": {"schema": _ref(op.request, schemas)}},
        }
    if not path.startswith(OPEN_OPERATIONS) and not path.startswith("/v1/images/public/"):
        operation["security"] = [{"apiKey": []}]
    return operation


def _ref(model: type[BaseModel], schemas: dict[str, Any]) -> dict[str, Any]:
    schema = model.model_json_schema(ref_template=REF, mode="validation")
    schemas.update(schema.pop("$defs", {}))
    schemas[model.__name__] = schema
    return {"$ref": REF.format(model=model.__name__)}


def _json(schema: dict[str, Any], description: str = "Success") -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": schema}}}


def openapi_route(routes: Sequence[BaseRoute]) -> Route:
    """``GET /openapi.json``, built once from ``routes`` (open: no API key)."""
    document = build_document(routes)

    async def openapi(request: Request) -> Response:
        return JSONResponse(document)

    return Route(OPENAPI_PATH, openapi, methods=["GET"])
