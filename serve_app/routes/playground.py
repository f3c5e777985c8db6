"""The playground page: ``GET /`` and ``GET /playground``, and its two assets.

The page is static (``serve_app/playground/``: ``index.html``, ``app.js``,
``style.css``), read once when the routes are built and served from memory. It
calls only the public API, with relative URLs, so it works under any route prefix
(``/hardened/`` in the tests) and with the visitor's own API key; that is why these
paths need no key themselves (``serve_app.asgi.auth.OPEN_PATHS``).

The page gets its own Content-Security-Policy instead of the guard's ``sandbox``
one: scripts, styles and fetches from its own origin only, images also from
``data:`` and ``blob:`` (previews and downloads), nothing inline, no framing.
"""

from __future__ import annotations

from importlib import resources
from typing import TYPE_CHECKING

from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.routing import BaseRoute, Route

if TYPE_CHECKING:
    from serve_app.ingress import Ingress

PAGE_CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; "
    "img-src 'self' data: blob:; connect-src 'self'; form-action 'none'; "
    "base-uri 'none'; frame-ancestors 'none'"
)
ASSETS = {
    "index.html": "text/html; charset=utf-8",
    "app.js": "text/javascript; charset=utf-8",
    "style.css": "text/css; charset=utf-8",
}
# Revalidate on every load, so an upgraded server's page is never mixed with old assets.
CACHE_CONTROL = "no-cache"


def load_assets() -> dict[str, bytes]:
    """The page's files, from the installed package (package data in pyproject)."""
    folder = resources.files("serve_app.playground")
    return {name: folder.joinpath(name).read_bytes() for name in ASSETS}


def routes(ingress: Ingress) -> list[BaseRoute]:
    """The page's routes, or none when ``playground.enabled`` is off."""
    if not ingress.args.playground.enabled:
        return []
    files = load_assets()

    def reply(name: str) -> Response:
        headers = {"content-security-policy": PAGE_CSP, "cache-control": CACHE_CONTROL}
        return Response(files[name], media_type=ASSETS[name], headers=headers)

    async def root(request: Request) -> Response:
        path = request.url.path
        if not path.endswith("/"):
            # ``/prefix`` -> ``/prefix/``: the page's relative URLs need the slash.
            return RedirectResponse(path + "/", status_code=308)
        return reply("index.html")

    async def page(request: Request) -> Response:
        return reply("index.html")

    async def script(request: Request) -> Response:
        return reply("app.js")

    async def style(request: Request) -> Response:
        return reply("style.css")

    return [
        Route("/", root, methods=["GET"], include_in_schema=False),
        Route("/playground", page, methods=["GET"], include_in_schema=False),
        Route("/playground/app.js", script, methods=["GET"], include_in_schema=False),
        Route("/playground/style.css", style, methods=["GET"], include_in_schema=False),
    ]
