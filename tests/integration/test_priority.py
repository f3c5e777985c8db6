"""Priority and deadlines end to end: async jobs (batch) and a person (interactive) on one
model replica, through Ray Serve.

The module's own app, ``imagegen-priority`` at ``/priority``, serves the tiny SDXL with a
compute budget of 8 images at 256x256 (generated at the 1024x1024 bucket scaled to
128 px: 16x16 latents, 256 latent pixels each), so two 4-image jobs fill it and the
rest queue.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import httpx
import numpy as np
import openai
import pytest

from tests.integration.conftest import app_args_for_tests, wait_until
from tests.support import handles
from tests.support.hardened_app import API_KEY, BATCH_KEY
from tests.support.http import assert_error
from tests.support.images import decode_b64, pixels

pytestmark = pytest.mark.integration

APP, PREFIX = "imagegen-priority", "/priority"
SIZE, LATENT_PIXELS = "256x256", 256
BUDGET_IMAGES = 8
ASYNC = {"prefer": "respond-async"}
JOBS = "/v1/images/jobs"


@pytest.fixture(scope="module")
def url(ray_serve: int, image_dir: str, base_url: str) -> Iterator[str]:
    from ray import serve

    from serve_app.app import build_app

    args = app_args_for_tests(image_dir)
    model = args["models"][0]
    model["batching"] = {
        "max_batch_size": 16,
        "max_batch_latent_pixels": BUDGET_IMAGES * LATENT_PIXELS,
        "max_batch_wait_s": 600,
    }
    model["deployment"]["ray_actor_options"] = {"num_cpus": 0.2}
    args["models"] = [model]
    args["default_model"] = model["id"]
    for part in ("encoder", "ingress"):
        args[part]["deployment"]["ray_actor_options"] = {"num_cpus": 0.05}
    serve.run(build_app(args), name=APP, route_prefix=PREFIX)
    yield f"http://127.0.0.1:{ray_serve}{PREFIX}"
    serve.delete(APP)


@pytest.fixture(scope="module")
def http(url: str) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=url, timeout=120) as session:
        yield session


@pytest.fixture(scope="module")
def sdk(url: str) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{url}/v1", api_key="unused", max_retries=0, timeout=120)


def model_stats() -> dict[str, Any]:
    return handles.call(APP, "Model:tiny-sdxl", "stats")


def submit_job(http: httpx.Client, **body: Any) -> str:
    made = http.post(
        "/v1/images/generations", json={"prompt": "a barn", "size": SIZE, **body}, headers=ASYNC
    )
    assert made.status_code == 202, made.text
    return made.json()["id"]


def job_status(http: httpx.Client, job_id: str) -> dict[str, Any]:
    response = http.get(f"{JOBS}/{job_id}")
    assert response.status_code == 200, response.text
    return response.json()


def test_a_sync_request_overtakes_sixteen_queued_jobs(
    http: httpx.Client, sdk: openai.OpenAI
) -> None:
    before = model_stats()["priority"]["preemptions"]
    jobs = [
        submit_job(http, n=4, num_inference_steps=30, seed=100 + i, prompt=f"job {i}")
        for i in range(16)
    ]
    try:
        # Two jobs fill the budget; the others wait in the replica's queue.
        wait_until(
            lambda: (s := model_stats())["active_rows"] == 8 and s["waiting_requests"] >= 8,
            240,
            "two running jobs and at least eight queued",
        )
        states = [job_status(http, job)["status"] for job in jobs]
        finished_before = states.count("succeeded")
        person = sdk.images.with_raw_response.generate(
            prompt="now", n=1, size=SIZE, extra_body={"num_inference_steps": 4}
        )
        assert person.headers["x-imagegen-priority"] == "interactive"
        assert person.parse().data[0].b64_json
        states = [job_status(http, job)["status"] for job in jobs]
        # At most the two jobs that were running have finished meanwhile.
        assert states.count("succeeded") <= finished_before + 2, states
        assert states.count("queued") + states.count("running") >= 8, states
        stats = model_stats()["priority"]
        assert stats["preemptions"] > before
        assert stats["queue_wait_ms"]["interactive"]["count"] >= 1
    finally:
        for job in jobs:
            http.delete(f"{JOBS}/{job}")


def test_a_paused_job_returns_the_image_it_gets_alone(
    http: httpx.Client, sdk: openai.OpenAI
) -> None:
    request = {"n": 4, "num_inference_steps": 30, "seed": 7, "prompt": "a paused barn"}
    before = model_stats()["priority"]["preemptions"]
    job = submit_job(http, **request)
    wait_until(
        lambda: ((job_status(http, job).get("progress") or {}).get("step") or 0) >= 3,
        240,
        "the job to run",
    )
    # The whole budget for a person: the job's rows must step aside, then resume.
    sdk.images.generate(prompt="now", n=BUDGET_IMAGES, size=SIZE, extra_body={"seed": 1})
    assert model_stats()["priority"]["preemptions"] > before
    done = wait_until(
        lambda: (j := job_status(http, job))["status"] in ("succeeded", "failed") and j,
        300,
        "the paused job to finish",
    )
    assert done["status"] == "succeeded", done
    alone = http.post("/v1/images/generations", json={**request, "size": SIZE, "priority": "batch"})
    assert alone.status_code == 200, alone.text
    assert alone.headers["x-imagegen-priority"] == "batch"
    for got, want in zip(done["result"]["data"], alone.json()["data"], strict=True):
        a, b = pixels(decode_b64(got["b64_json"])), pixels(decode_b64(want["b64_json"]))
        assert np.abs(a.astype(float) - b.astype(float)).mean() <= 1.0


def test_a_deadline_out_of_reach_is_refused_before_any_step(http: httpx.Client) -> None:
    body = {"prompt": "late", "size": SIZE, "num_inference_steps": 200}
    before = model_stats()["priority"]["deadline_refusals"]
    late = http.post("/v1/images/generations", json=body, headers={"x-request-timeout": "0.05"})
    assert_error(late, 504, None, "timeout_error")
    assert late.json()["error"]["code"] == "deadline_exceeded"
    assert "per step" in late.json()["error"]["message"]
    assert model_stats()["priority"]["deadline_refusals"] == before + 1


@pytest.mark.parametrize(
    ("headers", "body", "param"),
    [
        ({"x-imagegen-priority": "urgent"}, {}, "x-imagegen-priority"),
        ({"x-request-timeout": "soon"}, {}, "x-request-timeout"),
        ({}, {"priority": "urgent"}, "priority"),
    ],
)
def test_bad_scheduling_values_are_400s(
    http: httpx.Client, headers: dict[str, str], body: dict[str, Any], param: str
) -> None:
    response = http.post(
        "/v1/images/generations", json={"prompt": "x", "size": SIZE, **body}, headers=headers
    )
    assert_error(response, 400, param, "invalid_request_error")


def test_the_class_header_and_stats(http: httpx.Client) -> None:
    body = {"prompt": "x", "size": SIZE, "num_inference_steps": 2}
    sent = http.post("/v1/images/generations", json=body, headers={"x-imagegen-priority": "batch"})
    assert sent.status_code == 200 and sent.headers["x-imagegen-priority"] == "batch"
    stats = http.get("/v1/stats").json()["models"]["tiny-sdxl"]
    assert stats["latent_pixel_budget"] == BUDGET_IMAGES * LATENT_PIXELS
    assert stats["priority"]["latency_ms"]["batch"]["count"] >= 1
    assert stats["per_step_ms"] > 0


def test_a_batch_limited_key_cannot_send_interactive(hardened_url: str) -> None:
    body = {"prompt": "x", "size": "256x256", "num_inference_steps": 1}
    with httpx.Client(base_url=hardened_url, timeout=60) as client:
        batch = {"authorization": f"Bearer {BATCH_KEY}"}
        by_header = client.post(
            "/v1/images/generations",
            json=body,
            headers={**batch, "x-imagegen-priority": "interactive"},
        )
        assert_error(by_header, 403, "x-imagegen-priority", "permission_error")
        assert by_header.json()["error"]["code"] == "priority_not_allowed"
        by_body = client.post(
            "/v1/images/generations", json={**body, "priority": "interactive"}, headers=batch
        )
        assert_error(by_body, 403, "priority", "permission_error")
        as_job = client.post(
            "/v1/images/generations",
            json={**body, "priority": "interactive"},
            headers={**batch, **ASYNC},
        )
        assert_error(as_job, 403, "priority", "permission_error")
        default = client.post("/v1/images/generations", json=body, headers=batch)
        assert default.status_code == 200 and default.headers["x-imagegen-priority"] == "batch"
        full = {"authorization": f"Bearer {API_KEY}", "x-imagegen-priority": "interactive"}
        other = client.post("/v1/images/generations", json=body, headers=full)
        assert other.status_code == 200 and other.headers["x-imagegen-priority"] == "interactive"
