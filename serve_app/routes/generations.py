"""``POST /v1/images/generations``: one route, three dialects, one generation path.

The dispatch is all here: detect the dialect (``dialects/detect.py``), let it
translate the body into the canonical job and encode spec, run the shared
generate-then-encode path, and let it shape the response.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import BaseRoute, Route

from serve_app import limits
from serve_app.dialects import REGISTRY
from serve_app.dialects.detect import detect
from serve_app.http import api_endpoint, read_json, request_id_of
from serve_app.streaming import SSE_HEADERS, generation_events

if TYPE_CHECKING:
    from serve_app.ingress import Ingress

DIALECT_RESPONSE_HEADER = "x-imagegen-dialect"


def routes(ingress: Ingress) -> list[BaseRoute]:
    async def generations(request: Request) -> Response:
        request_id = request_id_of(request)
        body = await read_json(request, ingress.args.ingress.max_body_bytes)
        dialect = REGISTRY[detect(request.headers, body)]
        req = dialect.parse(body)
        model = ingress.resolve_model(dialect.model_name(req))
        job = dialect.to_job(req, model, request_id)
        spec = dialect.to_encode_spec(req, model, request_id, ingress.base_url(request))
        headers = {
            "x-imagegen-seeds": ",".join(map(str, job.seeds)),
            "x-imagegen-model": model.id,
            DIALECT_RESPONSE_HEADER: dialect.name,
        }
        if dialect.wants_stream(req):
            limits.check_job(model, job, spec)
            events = generation_events(ingress, model, req, job, spec)
            return StreamingResponse(
                events, media_type="text/event-stream", headers={**SSE_HEADERS, **headers}
            )
        images = await ingress.generate_images(model, job, spec)
        payload = dialect.build_response(req, model, job, images)
        return JSONResponse(payload, headers=headers)

    return [Route("/v1/images/generations", api_endpoint(generations), methods=["POST"])]
