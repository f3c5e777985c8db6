"""``POST /v1/images/generations``: one route, three dialects, one generation path.

The dispatch is all here: detect the dialect (``dialects/detect.py``), let it
translate the body into the canonical job and encode spec, run the shared
generate-then-encode path, and let it shape the response.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Route

from serve_app.asgi.endpoints import api_endpoint, generation_headers, read_json, request_id_of
from serve_app.dialects.detect import detect
from serve_app.dialects.loras import renamed_param
from serve_app.dialects.registry import REGISTRY
from serve_app.inputs.fetch import ImageFetcher, load_url_image
from serve_app.inputs.lora_urls import fetch_url_loras
from serve_app.inputs.uploads import with_init_image
from serve_app.streaming.sse import sse_response

if TYPE_CHECKING:
    from serve_app.ingress import Ingress

DIALECT_RESPONSE_HEADER = "x-imagegen-dialect"
# Where each dialect names adapter i (for errors fetching an adapter by URL).
LORA_PARAMS = {
    "together": "image_loras[{}].path",
    "openai": "loras[{}].name",
    "imagine": "loras[{}].name",
}


def routes(ingress: Ingress) -> list[BaseRoute]:
    limits = ingress.args.images
    fetcher = ImageFetcher(limits)

    async def generations(request: Request) -> Response:
        request_id = request_id_of(request)
        body = await read_json(request)
        dialect = REGISTRY[detect(request.headers, body)]
        req = dialect.parse(body)
        model = ingress.resolve_model(dialect.model_name(req))
        job = dialect.to_job(req, model, request_id)
        job = await fetch_url_loras(job, model, fetcher, LORA_PARAMS[dialect.name].format)
        url = dialect.image_url(req)
        if url is not None:  # image-to-image (Together's image_url)
            image = await load_url_image(fetcher, url, "image_url", limits)
            strength = dialect.strength(req) or limits.img2img_strength
            job, _ = with_init_image(job, image, strength)
        spec = dialect.to_encode_spec(req, model, request_id, ingress.base_url(request))
        headers = {
            **generation_headers(job.seeds, model.id),
            DIALECT_RESPONSE_HEADER: dialect.name,
        }
        fmt = dialect.stream_format(req, model, job, spec)
        if fmt is not None:
            return sse_response(ingress.stream_images(model, job, spec, fmt), headers)
        try:
            images = await ingress.generate_images(model, job, spec)
        except Exception as exc:
            raise renamed_param(exc, LORA_PARAMS[dialect.name].format) from None
        payload = dialect.build_response(req, model, job, images)
        return JSONResponse(payload, headers=headers)

    return [Route("/v1/images/generations", api_endpoint(generations), methods=["POST"])]
