"""Signed webhook delivery for async jobs: Standard Webhooks, retried with backoff.

- **Signing** is the reference library's (``standardwebhooks.Webhook.sign``), not a
  hand-written HMAC: headers ``webhook-id`` (the same on every retry, so receivers can
  deduplicate), ``webhook-timestamp`` (per attempt) and ``webhook-signature``.
- **Payload**: the spec's envelope ``{"type": "image.job.<event>", "timestamp",
  "data": <the job object>}``.
- **Retries** (tenacity): on 5xx, timeouts and connection errors, with exponential
  backoff, at most ``max_attempts`` attempts, none started later than ``max_total_s``
  after the first. 2xx is delivered; any other answer (4xx, an unfollowed redirect, a
  refused address) is final. Every attempt is reported to ``on_attempt``, which records
  it on the job.
- **SSRF**: the URL is checked by ``serve_app.inputs.fetch.ImageFetcher.check``, the
  very rules ``image_url`` follows (public addresses only unless on
  ``images.fetch_allowlist``), on every attempt and on every redirect hop (307/308,
  which keep the POST), and the connection is pinned to the checked address.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import urljoin

import httpx
from standardwebhooks import Webhook
from tenacity import (
    AsyncRetrying,
    retry_if_result,
    stop_after_attempt,
    stop_before_delay,
    wait_exponential,
)

from common.config import WebhookConfig
from common.errors import APIError
from serve_app.inputs.fetch import ImageFetcher, pinned_request
from storage.jobs import WebhookAttempt, iso_seconds

logger = logging.getLogger("imagegen.webhooks")

EVENTS = ("started", "completed")
DEFAULT_EVENTS = ["completed"]
KEPT_REDIRECTS = {307, 308}  # they keep the method and body
USER_AGENT = "imagegen-serve-webhooks/1"
OnAttempt = Callable[[WebhookAttempt], Awaitable[None]]


def load_secret(config: WebhookConfig) -> str | None:
    """The signing secret from ``secret_file`` or ``secret_env``; ``None`` if neither has one.
    A malformed secret stops the deployment at startup."""
    secret = ""
    if config.secret_file:
        secret = Path(config.secret_file).expanduser().read_text().strip()
    elif config.secret_env:
        secret = os.environ.get(config.secret_env, "").strip()
    if not secret:
        return None
    Webhook(secret)  # raises on a secret that is not (whsec_-prefixed) base64
    return secret


@dataclass(frozen=True)
class AttemptResult:
    delivered: bool
    retryable: bool
    status_code: int | None = None
    error: str | None = None


def envelope(event: str, job: dict[str, Any], now: float) -> bytes:
    body = {"type": f"image.job.{event}", "timestamp": iso_seconds(now), "data": job}
    return json.dumps(body, separators=(",", ":")).encode()


class WebhookSender:
    """Signs and delivers job events to their ``webhook_url``."""

    def __init__(
        self,
        secret: str,
        config: WebhookConfig,
        fetcher: ImageFetcher,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self.webhook = Webhook(secret)
        self.config = config
        self.fetcher = fetcher
        self._transport = transport

    def signed_headers(self, msg_id: str, payload: bytes, now: float) -> dict[str, str]:
        stamp = datetime.fromtimestamp(now, UTC)
        return {
            "webhook-id": msg_id,
            "webhook-timestamp": str(int(now)),
            "webhook-signature": self.webhook.sign(msg_id, stamp, payload.decode()),
            "content-type": "application/json",
            "user-agent": USER_AGENT,
        }

    def retrying(self) -> AsyncRetrying:
        """The retry policy: backoff on retryable results, bounded in attempts and time."""
        cfg = self.config
        return AsyncRetrying(
            stop=stop_after_attempt(cfg.max_attempts) | stop_before_delay(cfg.max_total_s),
            wait=wait_exponential(multiplier=cfg.initial_backoff_s, max=cfg.max_backoff_s),
            retry=retry_if_result(lambda result: result.retryable),
            retry_error_callback=lambda state: state.outcome.result() if state.outcome else None,
        )

    async def deliver(
        self, url: str, event: str, job: dict[str, Any], msg_id: str, on_attempt: OnAttempt
    ) -> bool:
        """Deliver one event, retrying per the policy; True once a 2xx came back."""
        count = 0

        async def attempt() -> AttemptResult:
            nonlocal count
            count += 1
            started = time.time()
            payload = envelope(event, job, started)
            result = await self.attempt(url, payload, self.signed_headers(msg_id, payload, started))
            await on_attempt(
                WebhookAttempt(
                    event=event,
                    attempt=count,
                    at=iso_seconds(started),
                    status_code=result.status_code,
                    error=result.error,
                    duration_ms=int((time.time() - started) * 1000),
                    delivered=result.delivered,
                )
            )
            return result

        result: AttemptResult = await self.retrying()(attempt)
        if not result.delivered:
            logger.warning("webhook %s not delivered after %d attempts: %s", msg_id, count, result)
        return result.delivered

    async def attempt(self, url: str, payload: bytes, headers: dict[str, str]) -> AttemptResult:
        """One POST (following kept redirects, each hop checked), within ``timeout_s``."""
        try:
            async with asyncio.timeout(self.config.timeout_s):
                return await self._post(url, payload, headers)
        except TimeoutError:
            return AttemptResult(False, True, error="timeout")

    async def _post(self, url: str, payload: bytes, headers: dict[str, str]) -> AttemptResult:
        async with httpx.AsyncClient(
            transport=self._transport, follow_redirects=False, trust_env=False
        ) as client:
            for _hop in range(self.fetcher.config.fetch_max_redirects + 1):
                try:
                    target, host, address = await self.fetcher.check(url, "webhook_url")
                except APIError as err:  # a refused or unresolvable address
                    return AttemptResult(False, err.code == "fetch_failed", error=err.message)
                request = pinned_request(
                    client, target, host, address, "POST", headers=headers, content=payload
                )
                try:
                    response = await client.send(request)
                except httpx.HTTPError as exc:
                    return AttemptResult(False, True, error=type(exc).__name__)
                status = response.status_code
                if status in KEPT_REDIRECTS and "location" in response.headers:
                    url = urljoin(url, response.headers["location"])
                    continue
                return AttemptResult(200 <= status < 300, status >= 500, status_code=status)
        return AttemptResult(False, False, error="too many redirects")
