"""The ingress app with fake handles (no Ray): deadlines, overload and failure mapping."""

from __future__ import annotations

import asyncio
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from ray import exceptions as ray_exc
from ray.serve import exceptions as serve_exc
from starlette.testclient import TestClient

from common.errors import APIError
from common.job import EncodedImage
from serve_app.ingress import Ingress
from serve_app.routes import asgi_app
from tests.support.fakes import FakeHandle, ok, wired

ROUTE = "/v1/images/generations"


async def pixels(job: Any) -> np.ndarray:
    return np.zeros((job.n, 8, 8, 3), np.uint8)


async def encode(pixels: np.ndarray, spec: Any, preview: bool = False) -> list[EncodedImage]:
    return [EncodedImage(b64_json="AA==") for _ in pixels]


ON_DEMAND = {
    "id": "lazy",
    "source": "builtin:tiny-sdxl",
    "cold_start_retry_after_s": 7,
    "deployment": {"autoscaling_config": {"min_replicas": 0, "max_replicas": 1}},
}


class ReplicaCounts:
    """Stands in for Serve's status: RUNNING replicas per deployment, calls recorded."""

    def __init__(self, counts: dict[str, int]) -> None:
        self.counts = counts
        self.asked: list[str] = []

    async def __call__(self, deployment: str) -> int:
        self.asked.append(deployment)
        return self.counts[deployment]


def make_client(
    tmp_path: Path,
    generate: Callable[..., Any],
    timeout_s: float = 5.0,
    replicas: ReplicaCounts | None = None,
):
    args = {
        "models": [
            {"id": "tiny", "source": "builtin:tiny-sdxl", "aliases": ["dall-e-3"]},
            ON_DEMAND,
        ],
        "ingress": {"request_timeout_s": timeout_s},
        "storage": {"local_dir": str(tmp_path)},
    }
    model = FakeHandle(generate=generate, ready=ok)
    encoder = FakeHandle(encode=encode, ready=ok)
    handles = {"tiny": model, "lazy": model}
    counts = replicas or ReplicaCounts({"Model:tiny": 1, "Model:lazy": 0})
    ingress = Ingress(args, wired(handles, encoder), encoder, "k" * 32, running_replicas=counts)  # type: ignore[arg-type]
    return TestClient(asgi_app(ingress)), model, encoder


def test_happy_path_returns_one_image_per_seed(tmp_path: Path) -> None:
    client, model, _ = make_client(tmp_path, pixels)
    response = client.post(ROUTE, json={"prompt": "x", "n": 3, "seed": 4})
    assert response.status_code == 200
    assert [d["seed"] for d in response.json()["data"]] == [4, 5, 6]
    assert len(model.generate.responses) == 1  # one model call for all three images


@pytest.mark.parametrize(
    "body,status,served",
    [
        ({}, 200, "tiny"),
        ({"model": None}, 200, "tiny"),
        ({"model": ""}, 200, "tiny"),  # Open WebUI's default edit model, and empty JSON
        ({"model": "dall-e-3"}, 200, "tiny"),
        ({"model": "lazy"}, 200, "lazy"),
        ({"model": " "}, 404, None),  # only "" means the default; a name must exist
        ({"model": "gpt-9"}, 404, None),
    ],
)
def test_empty_or_missing_model_is_the_default(
    tmp_path: Path, body: dict[str, Any], status: int, served: str | None
) -> None:
    client, _, _ = make_client(tmp_path, pixels)
    response = client.post(ROUTE, json={"prompt": "x", **body})
    assert response.status_code == status, response.text
    if served is None:
        error = response.json()["error"]
        assert (error["param"], error["code"]) == ("model", "model_not_found")
    else:
        assert response.headers["x-imagegen-model"] == served


def test_deadline_gives_504_and_cancels_the_work(tmp_path: Path) -> None:
    async def never(job: Any) -> np.ndarray:
        await asyncio.sleep(3600)
        raise AssertionError("unreachable")

    client, model, encoder = make_client(tmp_path, never, timeout_s=0.2)
    response = client.post(ROUTE, json={"prompt": "x"})
    assert response.status_code == 504
    assert response.json()["error"]["type"] == "timeout_error"
    assert model.generate.responses[0].cancelled  # the model replica then cancels its rows


@pytest.mark.parametrize(
    "exc,status,header",
    [
        (
            serve_exc.BackPressureError(num_queued_requests=5, max_queued_requests=4),
            429,
            "retry-after",
        ),
        (serve_exc.DeploymentUnavailableError("Model:tiny"), 503, "retry-after"),
    ],
)
def test_serve_overload_maps_to_retryable_errors(
    tmp_path: Path, exc: Exception, status: int, header: str
) -> None:
    async def fail(job: Any) -> np.ndarray:
        raise exc

    client, _, _ = make_client(tmp_path, fail)
    response = client.post(ROUTE, json={"prompt": "x"})
    assert response.status_code == status
    assert response.headers[header]


@pytest.mark.parametrize(
    "model,running,status,retry_after,code",
    [
        # Replicas running, queue full: an overload, retry soon.
        ("tiny", 1, 429, "1", "overloaded"),
        # No running replica (scaled to zero, starting): a cold start.
        ("lazy", 0, 503, "7", "model_cold_start"),
        # Any model, even an always-on one, with nothing running is unavailable.
        ("tiny", 0, 503, "10", "model_cold_start"),
        ("lazy", 2, 429, "1", "overloaded"),
    ],
)
def test_full_queue_is_429_when_busy_and_503_when_cold(
    tmp_path: Path, model: str, running: int, status: int, retry_after: str, code: str
) -> None:
    async def full(job: Any) -> np.ndarray:
        inner = serve_exc.BackPressureError(num_queued_requests=4, max_queued_requests=4)
        raise ray_exc.RayTaskError("encode", "remote traceback", inner)

    counts = ReplicaCounts({f"Model:{model}": running})
    client, _, _ = make_client(tmp_path, full, replicas=counts)
    for _ in range(3):
        response = client.post(ROUTE, json={"prompt": "x", "model": model})
        assert response.status_code == status
        assert response.headers["retry-after"] == retry_after
        assert response.json()["error"]["code"] == code
    assert counts.asked == [f"Model:{model}"]  # cached: one status call for the burst


def test_full_queue_stays_429_when_serve_status_fails(tmp_path: Path) -> None:
    async def full(job: Any) -> np.ndarray:
        raise serve_exc.BackPressureError(num_queued_requests=4, max_queued_requests=4)

    class Broken(ReplicaCounts):
        async def __call__(self, deployment: str) -> int:
            raise ConnectionError("controller unreachable")

    client, _, _ = make_client(tmp_path, full, replicas=Broken({}))
    response = client.post(ROUTE, json={"prompt": "x", "model": "lazy"})
    assert response.status_code == 429 and response.headers["retry-after"] == "1"


def test_api_error_raised_in_a_replica_reaches_the_client(tmp_path: Path) -> None:
    async def fail(job: Any) -> np.ndarray:
        inner = APIError("invalid_request", "prompt rejected by the model", param="prompt")
        raise ray_exc.RayTaskError("generate", "remote traceback", inner)

    client, _, _ = make_client(tmp_path, fail)
    body = client.post(ROUTE, json={"prompt": "x"}).json()
    assert body["error"]["param"] == "prompt"


def test_unexpected_failure_is_a_clean_500(tmp_path: Path) -> None:
    async def fail(job: Any) -> np.ndarray:
        raise RuntimeError("CUDA error at /opt/secret/kernel.cu:12")

    client, _, _ = make_client(tmp_path, fail)
    response = client.post(ROUTE, json={"prompt": "x"}, headers={"x-request-id": "rid-77"})
    assert response.status_code == 500
    message = response.json()["error"]["message"]
    assert "rid-77" in message and "secret" not in response.text and "CUDA" not in response.text


def test_readiness_reports_each_deployment(tmp_path: Path) -> None:
    client, _, _ = make_client(tmp_path, pixels)
    assert client.get("/ready").json() == {
        "status": "ready",
        "deployments": {"encoder": "ready", "model:tiny": "ready", "model:lazy": "on_demand"},
    }


def test_readiness_never_wakes_a_model_that_scales_to_zero(tmp_path: Path) -> None:
    client, model, _ = make_client(tmp_path, pixels)
    client.get("/ready")
    assert len(model.ready.responses) == 1  # "tiny" only; "lazy" was not called


@pytest.mark.parametrize(
    "module", ["serve_app.ingress", "serve_app.app", "deployments.encoder.server"]
)
def test_http_side_never_imports_torch(module: str) -> None:
    code = f"import sys, {module}; sys.exit('torch' in sys.modules or 'diffusers' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code], check=False).returncode == 0
