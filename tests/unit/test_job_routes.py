"""The job routes in-process: a fake streaming model, the real encoder, a real local store,
a webhook receiver over real HTTP (on 127.0.0.2, allowlisted as in the integration tier)."""

from __future__ import annotations

import asyncio
import base64
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from starlette.testclient import TestClient

from common.job import ImageEvent
from deployments.encoder.server import Encoder
from serve_app.ingress import Ingress
from serve_app.routes import asgi_app
from tests.support.fakes import FakeHandle, ok
from tests.support.webhook_receiver import WebhookReceiver, webhook_receiver
from tests.unit.test_imagine_routes import OwnerFromHeader

KEY = "k" * 32
SECRET = "whsec_" + base64.b64encode(b"unit-test-webhook-secret-012345").decode()
HOOK_HOST = "127.0.0.2"


class FakeStream:
    """``options(stream=True).generate_stream.remote(job, spec)``: progress, then the
    final, its images encoded (as the model replica does) by ``encode``."""

    def __init__(self, job: Any, step_s: float, spec: Any = None, encode: Any = None) -> None:
        self.job = job
        self.step_s = step_s
        self.spec = spec
        self.encode = encode
        self.cancelled = False

    def __aiter__(self) -> Any:
        return self._events()

    async def _events(self) -> Any:
        for step in range(1, self.job.steps + 1):
            await asyncio.sleep(self.step_s)
            if self.cancelled:
                raise asyncio.CancelledError
            yield ImageEvent("progress", None, step=step, total_steps=self.job.steps)
        yield await self.final()

    async def final(self) -> ImageEvent:
        images = await self.encode(np.full((self.job.n, 8, 8, 3), 7, np.uint8), self.spec)
        return ImageEvent("final", None, images=tuple(images))

    def cancel(self) -> None:
        self.cancelled = True


class StreamingModel:
    def __init__(self, step_s: float = 0.01) -> None:
        self.step_s = step_s
        self.jobs: list[Any] = []
        self.streams: list[FakeStream] = []
        self.encode: Any = None  # set by make_ingress
        self.ready = FakeHandle(ready=ok).ready  # type: ignore[attr-defined]

    def options(self, stream: bool) -> StreamingModel:
        assert stream
        return self

    @property
    def generate_stream(self) -> StreamingModel:
        return self

    def remote(self, job: Any, spec: Any) -> FakeStream:
        self.jobs.append(job)
        stream = FakeStream(job, self.step_s, spec, self.encode)
        self.streams.append(stream)
        return stream


def make_ingress(tmp_path: Path, model: StreamingModel, **jobs: Any) -> Ingress:
    storage = {"local_dir": str(tmp_path)}
    encoder = Encoder(storage, KEY)

    async def encode(pixels: Any, spec: Any, preview: bool = False) -> Any:
        return encoder.encode(pixels, spec, preview)

    args = {
        "models": [{"id": "tiny", "source": "builtin:tiny-sdxl"}],
        "storage": storage,
        "images": {"fetch_allowlist": [HOOK_HOST]},
        "jobs": {
            "lease_s": 2.0,
            "heartbeat_s": 0.2,
            "webhooks": {"secret_file": str(tmp_path / "secret"), "initial_backoff_s": 0.05},
            **jobs,
        },
    }
    (tmp_path / "secret").write_text(SECRET)
    model.encode = encode
    return Ingress(args, {"tiny": model}, FakeHandle(encode=encode, ready=ok), KEY)  # type: ignore[arg-type]


@pytest.fixture
def receiver() -> Iterator[WebhookReceiver]:
    with webhook_receiver(HOOK_HOST, SECRET, script=[500, 500]) as server:
        yield server


def wait_for(client: TestClient, job_id: str, status: str, headers: Any = None) -> dict[str, Any]:
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        job = client.get(f"/v1/images/jobs/{job_id}", headers=headers).json()
        if job["status"] == status:
            return job
        time.sleep(0.02)
    raise AssertionError(f"job {job_id} never became {status}: {job}")


def test_submit_poll_result_with_progress(tmp_path: Path) -> None:
    model = StreamingModel()
    with TestClient(asgi_app(make_ingress(tmp_path, model))) as client:
        made = client.post(
            "/v1/images/generations",
            json={"prompt": "a red fox", "n": 2, "response_format": "b64_json"},
            headers={"prefer": "respond-async"},
        )
        assert made.status_code == 202, made.text
        assert made.headers["preference-applied"] == "respond-async"
        job = made.json()
        assert job["status"] == "queued" and job["id"].startswith("job_")
        assert made.headers["location"].endswith(f"/v1/images/jobs/{job['id']}")
        done = wait_for(client, job["id"], "succeeded")
        assert len(done["result"]["data"]) == 2
        assert done["progress"]["step"] == done["progress"]["total_steps"]
        assert done["model"] == "tiny" and done["error"] is None
        assert done["expires_at"] > done["created_at"]
        # The model was asked for progress events and no previews.
        assert model.jobs[0].report_progress and model.jobs[0].partial_images == 0
        listed = client.get("/v1/images/jobs").json()
        assert [j["id"] for j in listed["data"]] == [job["id"]]


def test_jobs_route_takes_endpoint_and_refuses_streams(tmp_path: Path) -> None:
    with TestClient(asgi_app(make_ingress(tmp_path, StreamingModel()))) as client:
        bad = client.post("/v1/images/jobs", json={"prompt": "x", "endpoint": "/nope"})
        assert bad.status_code == 400 and bad.json()["error"]["param"] == "endpoint"
        stream = client.post(
            "/v1/images/jobs",
            json={"prompt": "x", "endpoint": "/v1/images/generations", "stream": True},
        )
        assert stream.status_code == 400 and stream.json()["error"]["param"] == "stream"
        made = client.post(
            "/v1/images/jobs", json={"prompt": "x", "endpoint": "/v1/images/generations"}
        )
        assert made.status_code == 202
        assert wait_for(client, made.json()["id"], "succeeded")["endpoint"] == (
            "/v1/images/generations"
        )


def test_a_bad_body_is_a_failed_job_with_the_routes_error(tmp_path: Path) -> None:
    with TestClient(asgi_app(make_ingress(tmp_path, StreamingModel()))) as client:
        made = client.post(
            "/v1/images/generations",
            json={"prompt": "x", "n": 0},
            headers={"prefer": "respond-async"},
        )
        failed = wait_for(client, made.json()["id"], "failed")
        assert failed["error"]["type"] == "invalid_request_error"
        assert failed["error"]["param"] == "n"


def test_webhook_retried_then_delivered_and_verified(
    tmp_path: Path, receiver: WebhookReceiver
) -> None:
    with TestClient(asgi_app(make_ingress(tmp_path, StreamingModel()))) as client:
        made = client.post(
            "/v1/images/generations",
            json={
                "prompt": "x",
                "webhook_url": receiver.url(),
                "webhook_events": ["started", "completed"],
            },
            headers={"prefer": "respond-async"},
        )
        assert made.status_code == 202, made.text
        job_id = made.json()["id"]
        wait_for(client, job_id, "succeeded")
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            job = client.get(f"/v1/images/jobs/{job_id}").json()
            if any(a["delivered"] and a["event"] == "completed" for a in job["webhook_attempts"]):
                break
            time.sleep(0.05)
        statuses = [(d.answered, d.verified is not None) for d in receiver.deliveries]
        assert all(verified for _, verified in statuses), statuses
        assert sorted(s for s, _ in statuses) == [200, 200, 500, 500]
        types = [d.verified["type"] for d in receiver.deliveries]
        assert "image.job.started" in types and "image.job.completed" in types
        completed = [d for d in receiver.deliveries if d.verified["type"] == "image.job.completed"]
        assert completed[-1].verified["data"]["id"] == job_id
        assert completed[-1].verified["data"]["status"] == "succeeded"
        # Retries keep the webhook-id (receivers deduplicate on it).
        ids = {d.headers["webhook-id"] for d in receiver.deliveries}
        assert ids == {f"msg_{job_id}_started", f"msg_{job_id}_completed"}
        attempts = job["webhook_attempts"]
        assert len(attempts) == 4 and sum(a["delivered"] for a in attempts) == 2


def test_webhook_to_a_private_address_is_refused(tmp_path: Path) -> None:
    with TestClient(asgi_app(make_ingress(tmp_path, StreamingModel()))) as client:
        for url in ("http://127.0.0.1:9/hook", "http://10.0.0.1/hook", "file:///etc/passwd"):
            made = client.post(
                "/v1/images/generations",
                json={"prompt": "x", "webhook_url": url},
                headers={"prefer": "respond-async"},
            )
            assert made.status_code == 400, (url, made.text)
            assert made.json()["error"]["param"] == "webhook_url"


def test_cancel_a_running_job(tmp_path: Path) -> None:
    model = StreamingModel(step_s=0.2)
    with TestClient(asgi_app(make_ingress(tmp_path, model))) as client:
        made = client.post(
            "/v1/images/generations", json={"prompt": "x"}, headers={"prefer": "respond-async"}
        )
        job_id = made.json()["id"]
        wait_for(client, job_id, "running")
        cancelled = client.delete(f"/v1/images/jobs/{job_id}")
        assert cancelled.status_code == 200 and cancelled.json()["status"] == "cancelled"
        assert model.streams[0].cancelled
        assert client.get(f"/v1/images/jobs/{job_id}").json()["status"] == "cancelled"


def test_owners_are_separate(tmp_path: Path) -> None:
    app = OwnerFromHeader(asgi_app(make_ingress(tmp_path, StreamingModel())))
    with TestClient(app) as client:
        alice, bob = {"x-test-owner": "alice"}, {"x-test-owner": "bob"}
        made = client.post(
            "/v1/images/generations",
            json={"prompt": "x"},
            headers={"prefer": "respond-async", **alice},
        )
        job_id = made.json()["id"]
        wait_for(client, job_id, "succeeded", alice)
        assert client.get(f"/v1/images/jobs/{job_id}", headers=bob).status_code == 404
        assert client.delete(f"/v1/images/jobs/{job_id}", headers=bob).status_code == 404
        assert client.get("/v1/images/jobs", headers=bob).json()["data"] == []


def test_multipart_job_takes_endpoint_and_repeated_events(tmp_path: Path) -> None:
    import io

    from PIL import Image

    png = io.BytesIO()
    Image.new("RGB", (32, 32), (9, 9, 9)).save(png, format="PNG")
    with TestClient(asgi_app(make_ingress(tmp_path, StreamingModel()))) as client:
        made = client.post(
            "/v1/images/jobs",
            data={
                "endpoint": "/v1/images/edits",
                "prompt": "x",
                "webhook_url": f"http://{HOOK_HOST}:9/hook",
                "webhook_events": ["started", "completed"],
            },
            files={"image": ("a.png", png.getvalue(), "image/png")},
        )
        assert made.status_code == 202, made.text
        assert made.json()["webhook"]["events"] == ["started", "completed"]
        wrong = client.post(
            "/v1/images/jobs",
            data={"endpoint": "/v1/images/generations", "prompt": "x"},
            files={"image": ("a.png", png.getvalue(), "image/png")},
        )
        assert wrong.status_code == 400 and wrong.json()["error"]["param"] == "endpoint"


def test_list_refuses_unknown_query_parameters(tmp_path: Path) -> None:
    with TestClient(asgi_app(make_ingress(tmp_path, StreamingModel()))) as client:
        response = client.get("/v1/images/jobs", params={"limit": 5, "colour": "red"})
        assert response.status_code == 400 and response.json()["error"]["param"] == "colour"
        assert client.get("/v1/images/jobs", params={"limit": 0}).status_code == 400
