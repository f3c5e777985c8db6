"""A small real HTTP server for image_url tests: serves images, redirects, records hits.

Routes: ``/img.png`` (a PNG), ``/text`` (text/plain), ``/big.png`` (large body),
``/slow.png`` (answers after a delay), ``/redirect?to=URL`` (302 to URL).
Every request's path is recorded in ``hits``, so a test can assert nothing was fetched.
"""

from __future__ import annotations

import io
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit

import numpy as np
from PIL import Image


def png_bytes(width: int = 96, height: int = 64, seed: int = 0) -> bytes:
    pixels = np.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="PNG")
    return buffer.getvalue()


class ImageServer:
    def __init__(self, host: str, delay_s: float = 3.0) -> None:
        self.hits: list[str] = []
        # Any other file to serve by path, as application/octet-stream (LoRA adapters).
        self.files: dict[str, bytes] = {}
        self.image = png_bytes()
        self.delay_s = delay_s
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: object) -> None:
                pass

            def do_GET(self) -> None:  # noqa: N802 - http.server's name
                server.hits.append(self.path)
                parts = urlsplit(self.path)
                if parts.path in server.files:
                    self._send(200, "application/octet-stream", server.files[parts.path])
                elif parts.path == "/img.png":
                    self._send(200, "image/png", server.image)
                elif parts.path == "/text":
                    self._send(200, "text/plain", b"not an image")
                elif parts.path == "/big.png":
                    self._send(200, "image/png", b"\0" * (3 << 20))
                elif parts.path == "/slow.png":
                    time.sleep(server.delay_s)
                    self._send(200, "image/png", server.image)
                elif parts.path == "/redirect":
                    target = parse_qs(parts.query)["to"][0]
                    self.send_response(302)
                    self.send_header("location", target)
                    self.send_header("content-length", "0")
                    self.end_headers()
                else:
                    self._send(404, "text/plain", b"no")

            def _send(self, status: int, content_type: str, body: bytes) -> None:
                self.send_response(status)
                self.send_header("content-type", content_type)
                self.send_header("content-length", str(len(body)))
                self.end_headers()
                with suppress(BrokenPipeError, ConnectionResetError):
                    self.wfile.write(body)

        self.httpd = ThreadingHTTPServer((host, 0), Handler)
        self.httpd.daemon_threads = True
        self.host = host
        self.port = self.httpd.server_address[1]

    def url(self, path: str) -> str:
        return f"http://{self.host}:{self.port}{path}"


@contextmanager
def image_server(host: str = "127.0.0.1", delay_s: float = 3.0) -> Iterator[ImageServer]:
    server = ImageServer(host, delay_s)
    thread = threading.Thread(target=server.httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.httpd.shutdown()
        server.httpd.server_close()
