"""A real HTTP server that receives job webhooks and verifies them with ``standardwebhooks``.

It answers each POST with the next status of its script (then 200), or with a 307
to ``to`` for ``/redirect?to=URL`` (a redirect that keeps the POST), and records
every delivery: the headers, the raw body, and the verified payload (``None`` when
the signature did not verify), so tests assert on what a real receiver would see.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

from standardwebhooks import Webhook, WebhookVerificationError


@dataclass
class Delivery:
    path: str
    headers: dict[str, str]
    body: bytes
    verified: Any  # the parsed payload when the signature verified, else None
    answered: int


class WebhookReceiver:
    def __init__(self, host: str, secret: str, script: list[int] | None = None) -> None:
        self.webhook = Webhook(secret)
        self.script = list(script or [])
        self.deliveries: list[Delivery] = []
        self.lock = threading.Lock()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: object) -> None:
                pass

            def do_POST(self) -> None:  # noqa: N802 - http.server's name
                body = self.rfile.read(int(self.headers.get("content-length", "0")))
                headers = {k.lower(): v for k, v in self.headers.items()}
                try:
                    verified = receiver.webhook.verify(body, headers)
                except WebhookVerificationError:
                    verified = None
                parts = urlsplit(self.path)
                if parts.path == "/redirect":
                    self.send_response(307)
                    self.send_header("location", parse_qs(parts.query)["to"][0])
                    self.send_header("content-length", "0")
                    self.end_headers()
                    return
                with receiver.lock:
                    status = receiver.script.pop(0) if receiver.script else 200
                    receiver.deliveries.append(Delivery(self.path, headers, body, verified, status))
                self.send_response(status)
                self.send_header("content-length", "0")
                self.end_headers()
                with suppress(BrokenPipeError, ConnectionResetError):
                    self.wfile.flush()

        self.httpd = ThreadingHTTPServer((host, 0), Handler)
        self.httpd.daemon_threads = True
        self.host = host
        self.port = self.httpd.server_address[1]

    def url(self, path: str = "/hook") -> str:
        return f"http://{self.host}:{self.port}{path}"

    def for_path(self, path: str) -> list[Delivery]:
        with self.lock:
            return [d for d in self.deliveries if d.path == path]


@contextmanager
def webhook_receiver(
    host: str, secret: str, script: list[int] | None = None
) -> Iterator[WebhookReceiver]:
    receiver = WebhookReceiver(host, secret, script)
    thread = threading.Thread(target=receiver.httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield receiver
    finally:
        receiver.httpd.shutdown()
        receiver.httpd.server_close()
