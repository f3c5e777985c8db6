"""A1111's discovery routes under ``/sdapi/v1`` (``dialects/a1111_info.py`` says what
each answers) and ``POST /png-info``. Every route checks Basic auth like the others."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from common.errors import APIError, invalid
from serve_app.asgi.endpoints import read_json
from serve_app.asgi.openapi import ApiRoute, Operation
from serve_app.dialects import a1111_info
from serve_app.dialects.a1111_img2img import decode_b64

RouteMaker = Callable[[str, Any, str, Operation], ApiRoute]


def discovery_routes(
    route: RouteMaker, check_client: Callable[[Request], str], auth_on: bool
) -> list[ApiRoute]:
    def fixed(value: Callable[[], Any]) -> Any:
        async def endpoint(request: Request) -> Response:
            check_client(request)
            return JSONResponse(value())

        return endpoint

    async def png_info(request: Request) -> Response:
        check_client(request)
        body = await read_json(request)
        if not isinstance(body, dict):
            raise APIError("unprocessable", "The request body must be a JSON object.")
        image = body.get("image")
        if not isinstance(image, str) or not image.strip():
            raise invalid("Missing required parameter: 'image' (base64).", "image")
        data = decode_b64(image.strip(), "image")
        return JSONResponse(await asyncio.to_thread(a1111_info.png_info, data))

    def get(path: str, value: Callable[[], Any], summary: str) -> ApiRoute:
        return route(path, fixed(value), "GET", Operation(summary))

    empty = [
        get(path, list, f"A1111 {path[1:]}: none here") for path in a1111_info.EMPTY_LIST_ROUTES
    ]
    return [
        *empty,
        get("/upscalers", lambda: a1111_info.UPSCALERS, "A1111 upscalers"),
        get("/latent-upscale-modes", a1111_info.latent_upscale_modes, "Hires fix latent modes"),
        get("/embeddings", a1111_info.embeddings, "A1111 textual inversion embeddings"),
        get("/scripts", a1111_info.scripts, "A1111 scripts"),
        get("/cmd-flags", lambda: a1111_info.cmd_flags(auth_on), "A1111 command-line flags"),
        get("/memory", a1111_info.memory, "A1111 memory"),
        route("/refresh-checkpoints", fixed(lambda: None), "POST", Operation("Rescan models")),
        route("/refresh-vae", fixed(lambda: None), "POST", Operation("Rescan VAEs")),
        route("/png-info", png_info, "POST", Operation("Read A1111 parameters from a PNG")),
    ]
