"""Async jobs on the real app over HTTP: submit, poll, result, signed webhooks, cancel.

The webhook receiver is a real HTTP server in the test on ``127.0.0.2`` (the loopback
address the test app's ``images.fetch_allowlist`` names, as for ``image_url``); it
verifies every delivery with ``standardwebhooks``.
"""

from __future__ import annotations

import base64
import io
import time
from collections.abc import Iterator
from typing import Any

import httpx
import openai
import pytest
from PIL import Image

from tests.integration.conftest import IMAGE_SERVER_HOST, TEST_WEBHOOK_SECRET
from tests.support.http import assert_error
from tests.support.webhook_receiver import WebhookReceiver, webhook_receiver

pytestmark = pytest.mark.integration

ASYNC = {"prefer": "respond-async"}
JOBS = "/v1/images/jobs"


def wait_job(
    http: httpx.Client, job_id: str, done: Any, timeout_s: float = 120, **kw: Any
) -> dict[str, Any]:
    """Poll until ``done(job)``; fail with the last job seen."""
    deadline = time.monotonic() + timeout_s
    job: dict[str, Any] = {}
    while time.monotonic() < deadline:
        response = http.get(f"{JOBS}/{job_id}", **kw)
        assert response.status_code == 200, response.text
        job = response.json()
        if done(job):
            return job
        time.sleep(0.1)
    raise AssertionError(f"job {job_id} not done in {timeout_s}s: {job}")


def finished(job: dict[str, Any]) -> bool:
    return job["status"] in ("succeeded", "failed", "cancelled")


@pytest.fixture
def receiver() -> Iterator[WebhookReceiver]:
    with webhook_receiver(IMAGE_SERVER_HOST, TEST_WEBHOOK_SECRET) as server:
        yield server


def test_submit_poll_result(http: httpx.Client, client: openai.OpenAI) -> None:
    body = {"prompt": "a lighthouse", "n": 2, "size": "256x256", "seed": 11}
    made = http.post("/v1/images/generations", json=body, headers=ASYNC)
    assert made.status_code == 202, made.text
    assert made.headers["preference-applied"] == "respond-async"
    job = made.json()
    assert job["status"] in ("queued", "running") and job["model"] == "tiny-sdxl"
    assert made.headers["location"].endswith(f"{JOBS}/{job['id']}")
    done = wait_job(http, job["id"], finished)
    assert done["status"] == "succeeded", done
    assert done["progress"]["step"] == done["progress"]["total_steps"] == 20
    images = done["result"]["data"]
    assert len(images) == 2
    # The result is the route's own body: the same seed gives the same image as a sync call.
    sync = client.images.generate(
        prompt="a lighthouse", n=2, size="256x256", extra_body={"seed": 11}
    )
    for got, want in zip(images, sync.data, strict=True):
        a = Image.open(io.BytesIO(base64.b64decode(got["b64_json"])))
        b = Image.open(io.BytesIO(base64.b64decode(want.b64_json or "")))
        assert a.size == b.size == (256, 256)
        diff = max(abs(x - y) for x, y in zip(a.tobytes(), b.tobytes(), strict=True))
        assert diff <= 2
    listed = http.get(JOBS, params={"limit": 1}).json()
    assert listed["object"] == "list" and listed["data"][0]["id"] == job["id"]


def test_jobs_route_wraps_an_edit(http: httpx.Client) -> None:
    png = io.BytesIO()
    Image.new("RGB", (64, 64), (200, 30, 30)).save(png, format="PNG")
    made = http.post(
        JOBS,
        data={
            "endpoint": "/v1/images/edits",
            "prompt": "make it blue",
            "size": "256x256",
            "webhook_events": ["started", "completed"],  # repeated form fields
        },
        files={"image": ("in.png", png.getvalue(), "image/png")},
    )
    assert made.status_code == 202, made.text
    done = wait_job(http, made.json()["id"], finished)
    assert done["status"] == "succeeded", done
    assert done["endpoint"] == "/v1/images/edits" and len(done["result"]["data"]) == 1
    assert "webhook" not in done  # events without a webhook_url are ignored


def test_failed_job_carries_the_routes_error(http: httpx.Client) -> None:
    made = http.post(JOBS, json={"endpoint": "/v1/images/generations", "prompt": "x", "n": 99})
    assert made.status_code == 202
    done = wait_job(http, made.json()["id"], finished)
    assert done["status"] == "failed"
    assert done["error"]["type"] == "invalid_request_error" and done["error"]["param"] == "n"
    assert_error(http.get(f"{JOBS}/job_{'0' * 11}{'a' * 26}"), 404, "id", "invalid_request_error")


def test_webhook_delivered_and_verified(http: httpx.Client, receiver: WebhookReceiver) -> None:
    body = {
        "prompt": "a hook",
        "size": "256x256",
        "webhook_url": receiver.url("/verified"),
        "webhook_events": ["started", "completed"],
    }
    made = http.post("/v1/images/generations", json=body, headers=ASYNC)
    assert made.status_code == 202, made.text
    job_id = made.json()["id"]
    wait_job(http, job_id, lambda j: len([a for a in j["webhook_attempts"] if a["delivered"]]) == 2)
    deliveries = receiver.for_path("/verified")
    assert all(d.verified is not None for d in deliveries)
    by_type = {d.verified["type"]: d.verified for d in deliveries}
    assert set(by_type) == {"image.job.started", "image.job.completed"}
    assert by_type["image.job.started"]["data"]["status"] == "running"
    completed = by_type["image.job.completed"]["data"]
    assert completed["id"] == job_id and completed["status"] == "succeeded"
    assert completed["result"]["data"][0]["b64_json"]


def test_receiver_500_twice_then_200(http: httpx.Client) -> None:
    with webhook_receiver(IMAGE_SERVER_HOST, TEST_WEBHOOK_SECRET, script=[500, 500]) as hook:
        made = http.post(
            JOBS,
            json={
                "endpoint": "/v1/images/generations",
                "prompt": "retry me",
                "size": "256x256",
                "webhook_url": hook.url(),
            },
        )
        assert made.status_code == 202, made.text
        job = wait_job(
            http, made.json()["id"], lambda j: any(a["delivered"] for a in j["webhook_attempts"])
        )
        attempts = job["webhook_attempts"]
        assert [a["status_code"] for a in attempts] == [500, 500, 200]
        assert [a["attempt"] for a in attempts] == [1, 2, 3] and attempts[-1]["delivered"]
        assert [d.answered for d in hook.deliveries] == [500, 500, 200]
        assert all(d.verified is not None for d in hook.deliveries)
        assert len({d.headers["webhook-id"] for d in hook.deliveries}) == 1


def test_cancel_a_running_job(http: httpx.Client) -> None:
    # 200 steps at 1024 (128 px generated): long enough to cancel mid-flight.
    body = {"prompt": "long", "size": "1024x1024", "num_inference_steps": 200}
    made = http.post("/v1/images/generations", json=body, headers=ASYNC)
    assert made.status_code == 202, made.text
    job_id = made.json()["id"]
    running = wait_job(http, job_id, lambda j: j["status"] == "running" or finished(j))
    assert running["status"] == "running", running
    cancelled = http.delete(f"{JOBS}/{job_id}")
    assert cancelled.status_code == 200 and cancelled.json()["status"] == "cancelled"
    steps_at_cancel = cancelled.json()["progress"]["step"]
    assert steps_at_cancel < 200
    time.sleep(1.0)
    after = http.get(f"{JOBS}/{job_id}").json()
    assert after["status"] == "cancelled" and after["result"] is None


@pytest.mark.parametrize(
    ("url", "code"),
    [
        ("http://127.0.0.1:9/hook", "blocked_address"),
        ("http://localhost:9/hook", "blocked_address"),
        ("http://10.1.2.3/hook", "blocked_address"),
        ("http://169.254.169.254/latest/meta-data", "blocked_address"),
        ("http://[::1]:9/hook", "blocked_address"),
        ("http://[::ffff:127.0.0.1]/hook", "blocked_address"),
        ("http://100.64.0.1/hook", "blocked_address"),
        ("ftp://example.com/hook", "unsupported_url_scheme"),
        ("file:///etc/passwd", "unsupported_url_scheme"),
        ("http://user:pw@example.com/hook", "invalid_url"),
    ],
)
def test_webhook_url_ssrf_table(http: httpx.Client, url: str, code: str) -> None:
    body = {"prompt": "x", "webhook_url": url}
    response = http.post("/v1/images/generations", json=body, headers=ASYNC)
    assert_error(response, 400, "webhook_url", "invalid_request_error")
    assert response.json()["error"]["code"] == code


def test_webhook_redirect_is_checked_at_every_hop(
    http: httpx.Client, receiver: WebhookReceiver
) -> None:
    # A 307 keeps the POST; its target (127.0.0.1, not allowlisted) is refused at the hop.
    target = receiver.url("/redirect?to=http://127.0.0.1:9/hook")
    body = {"endpoint": "/v1/images/generations", "prompt": "x", "size": "256x256"}
    made = http.post(JOBS, json={**body, "webhook_url": target})
    assert made.status_code == 202, made.text
    job = wait_job(http, made.json()["id"], lambda j: bool(j["webhook_attempts"]))
    [attempt] = job["webhook_attempts"]  # a refused address is final, not retried
    assert attempt["delivered"] is False and "private" in attempt["error"]
    # And a 307 to an allowed address is followed and delivered.
    followed = receiver.url("/redirect?to=" + receiver.url("/landed"))
    made = http.post(JOBS, json={**body, "webhook_url": followed})
    job = wait_job(http, made.json()["id"], lambda j: bool(j["webhook_attempts"]))
    assert job["webhook_attempts"][0]["delivered"] is True
    assert receiver.for_path("/landed")[0].verified["data"]["id"] == job["id"]
