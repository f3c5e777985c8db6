"""A streamed request that cannot be admitted is refused before the 200, in the same
shape as a plain request: 429 ``overloaded`` (or 503 ``model_cold_start``) with
``Retry-After``, never a 200 with an in-band error event."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ray.serve import exceptions as serve_exc
from starlette.testclient import TestClient

from serve_app.routes import asgi_app
from tests.unit.test_job_routes import FakeStream, StreamingModel, make_ingress

STREAM = {"prompt": "x", "stream": True, "partial_images": 1}


class RefusedStream(FakeStream):
    """Serve's router found the model's queue full while assigning a replica."""

    async def _fetch_future_result_async(self) -> None:
        raise serve_exc.BackPressureError(num_queued_requests=4, max_queued_requests=4)


class FullModel(StreamingModel):
    def remote(self, job: Any, spec: Any) -> FakeStream:
        stream = RefusedStream(job, self.step_s, spec, self.encode)
        self.streams.append(stream)
        return stream


class FinalOnly(FakeStream):
    async def _events(self) -> Any:
        yield await self.final()


class ReadyModel(StreamingModel):
    def remote(self, job: Any, spec: Any) -> FakeStream:
        stream = FinalOnly(job, self.step_s, spec, self.encode)
        self.streams.append(stream)
        return stream


class Running:
    async def __call__(self, deployment: str) -> int:
        return 1


def test_a_full_queue_refuses_a_stream_with_429_before_it_starts(tmp_path: Path) -> None:
    ingress = make_ingress(tmp_path, FullModel())
    ingress._count_replicas = Running()  # type: ignore[method-assign]
    with TestClient(asgi_app(ingress)) as client:
        streamed = client.post("/v1/images/generations", json=STREAM)
        plain = client.post("/v1/images/generations", json={"prompt": "x"})
    assert streamed.status_code == 429, streamed.text
    assert streamed.headers["content-type"].startswith("application/json")
    assert streamed.headers["retry-after"] == "1"
    assert streamed.json()["error"]["code"] == "overloaded"
    assert streamed.json()["error"].keys() == plain.json()["error"].keys()
    assert ingress.models["tiny"].streams[0].cancelled  # type: ignore[attr-defined]


def test_an_admitted_stream_still_streams(tmp_path: Path) -> None:
    with TestClient(asgi_app(make_ingress(tmp_path, ReadyModel()))) as client:
        streamed = client.post("/v1/images/generations", json={**STREAM, "partial_images": 0})
    assert streamed.status_code == 200
    assert streamed.headers["content-type"].startswith("text/event-stream")
    assert "image_generation.completed" in streamed.text
