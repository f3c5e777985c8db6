"""Webhook signing (Standard Webhooks) and the delivery retry policy, against a mock transport."""

from __future__ import annotations

import base64
import json
import time

import httpx
import pytest
from standardwebhooks import Webhook

from common.config import ImageInputConfig, JobsConfig, WebhookConfig
from serve_app.inputs.fetch import ImageFetcher
from serve_app.jobs.webhooks import WebhookSender, envelope, load_secret
from storage.jobs import WebhookAttempt

SECRET = "whsec_" + base64.b64encode(b"unit-test-webhook-secret-012345").decode()
HOOK = "http://203.0.113.7/hook"  # TEST-NET-3 is not global: allowlisted below


def sender(answers: list[object], **config: object) -> tuple[WebhookSender, list[httpx.Request]]:
    seen: list[httpx.Request] = []

    def handle(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        answer = answers.pop(0) if answers else 200
        if isinstance(answer, Exception):
            raise answer
        return httpx.Response(int(answer))  # type: ignore[call-overload]

    cfg = WebhookConfig(initial_backoff_s=0.01, max_backoff_s=0.02, **config)  # type: ignore[arg-type]
    fetcher = ImageFetcher(ImageInputConfig(fetch_allowlist=["203.0.113.0/24"]))
    return WebhookSender(SECRET, cfg, fetcher, httpx.MockTransport(handle)), seen


async def deliver(hook: WebhookSender) -> tuple[bool, list[WebhookAttempt]]:
    attempts: list[WebhookAttempt] = []

    async def record(attempt: WebhookAttempt) -> None:
        attempts.append(attempt)

    job = {"id": "job_x", "status": "succeeded"}
    ok = await hook.deliver(HOOK, "completed", job, "msg_job_x_completed", record)
    return ok, attempts


async def test_signature_verifies_with_the_reference_library() -> None:
    hook, seen = sender([200])
    ok, attempts = await deliver(hook)
    assert ok and len(attempts) == 1 and attempts[0].status_code == 200
    request = seen[0]
    payload = Webhook(SECRET).verify(request.content, dict(request.headers))
    assert payload["type"] == "image.job.completed" and payload["data"]["id"] == "job_x"
    assert request.headers["webhook-id"] == "msg_job_x_completed"
    assert request.headers["host"] == "203.0.113.7"  # pinned to the checked address


async def test_500_twice_then_200_is_three_attempts() -> None:
    hook, seen = sender([500, 502])
    ok, attempts = await deliver(hook)
    assert ok and [a.status_code for a in attempts] == [500, 502, 200]
    assert [a.attempt for a in attempts] == [1, 2, 3]
    assert len({r.headers["webhook-id"] for r in seen}) == 1


async def test_connection_errors_and_timeouts_retry() -> None:
    hook, _ = sender([httpx.ConnectError("refused"), httpx.ReadTimeout("slow")])
    ok, attempts = await deliver(hook)
    assert ok and [a.error for a in attempts] == ["ConnectError", "ReadTimeout", None]


async def test_4xx_is_final() -> None:
    hook, _ = sender([404])
    ok, attempts = await deliver(hook)
    assert not ok and len(attempts) == 1 and attempts[0].status_code == 404


async def test_attempts_are_bounded() -> None:
    hook, _ = sender([500] * 10, max_attempts=3)
    ok, attempts = await deliver(hook)
    assert not ok and len(attempts) == 3


async def test_total_time_is_bounded() -> None:
    hook, _ = sender([500] * 50, max_attempts=20, max_total_s=0.05)
    started = time.monotonic()
    ok, attempts = await deliver(hook)
    assert not ok and len(attempts) < 20 and time.monotonic() - started < 2


async def test_a_private_address_is_never_connected_to() -> None:
    hook, seen = sender([200])
    attempts: list[WebhookAttempt] = []

    async def record(attempt: WebhookAttempt) -> None:
        attempts.append(attempt)

    ok = await hook.deliver("http://127.0.0.1/hook", "completed", {}, "msg", record)
    assert not ok and not seen and "private" in (attempts[0].error or "")


def test_envelope_and_secret_loading(tmp_path, monkeypatch: pytest.MonkeyPatch) -> None:  # type: ignore[no-untyped-def]
    body = json.loads(envelope("started", {"id": "job_x"}, 0))
    assert body == {
        "type": "image.job.started",
        "timestamp": "1970-01-01T00:00:00.000Z",
        "data": {"id": "job_x"},
    }
    monkeypatch.setenv("HOOK_SECRET", SECRET)
    assert load_secret(WebhookConfig(secret_env="HOOK_SECRET")) == SECRET
    assert load_secret(WebhookConfig(secret_env="NOT_SET_ANYWHERE")) is None
    (tmp_path / "s").write_text(SECRET + "\n")
    assert load_secret(WebhookConfig(secret_file=str(tmp_path / "s"))) == SECRET


def test_heartbeat_must_fit_in_the_lease() -> None:
    with pytest.raises(ValueError, match="heartbeat_s"):
        JobsConfig(lease_s=2, heartbeat_s=1.5)
