"""Async jobs under faults and load: owners, app-wide admission, storms, a SIGKILLed
ingress whose jobs are taken over, a cold model, and a restart of the app on the S3
store (a real moto_server) that reruns the job in flight."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import httpx
import pytest

from tests.integration.conftest import APP_NAME, s3_app_args, wait_until
from tests.integration.test_jobs import ASYNC, JOBS, finished, wait_job
from tests.support.hardened_app import (
    API_KEY,
    INGRESS_LIMIT,
    JOBS_MAX_QUEUED,
    MODEL_ONGOING,
    MODEL_QUEUED,
    SECOND_KEY,
)
from tests.support.scaling_app import MAX_QUEUED, ON_DEMAND, deployment, replica_states, wait_for

pytestmark = pytest.mark.integration

GEN = "/v1/images/generations"
AUTH = {"authorization": f"Bearer {API_KEY}"}
OTHER = {"authorization": f"Bearer {SECOND_KEY}"}
STORM = 256  # well past the ingress's own admission limit (INGRESS_LIMIT)
LONG = {"prompt": "long", "size": "1024x1024", "num_inference_steps": 200}


def test_another_keys_job_is_a_404(hardened_url: str) -> None:
    with httpx.Client(base_url=hardened_url, timeout=60) as http:
        made = http.post(GEN, json={"prompt": "mine"}, headers={**ASYNC, **AUTH})
        assert made.status_code == 202, made.text
        job_id = made.json()["id"]
        wait_job(http, job_id, finished, headers=AUTH)
        for method in ("GET", "DELETE"):
            other = http.request(method, f"{JOBS}/{job_id}", headers=OTHER)
            assert other.status_code == 404 and other.json()["error"]["code"] == "job_not_found"
        assert job_id not in [j["id"] for j in http.get(JOBS, headers=OTHER).json()["data"]]
        assert http.get(f"{JOBS}/{job_id}").status_code == 401  # no key at all


def test_jobs_wait_queued_past_a_full_model_queue_then_429(hardened_url: str) -> None:
    # The model takes 2 running + 4 queued; jobs past that wait (not refused) and all
    # finish; past jobs.max_queued unfinished jobs, submission is a 429.
    async def burst() -> list[httpx.Response]:
        async with httpx.AsyncClient(base_url=hardened_url, timeout=60) as session:
            return await asyncio.gather(
                *(
                    session.post(
                        GEN, json={"prompt": f"j{i}", "seed": i}, headers={**ASYNC, **AUTH}
                    )
                    for i in range(JOBS_MAX_QUEUED + 4)
                )
            )

    responses = asyncio.run(burst())
    accepted = [r for r in responses if r.status_code == 202]
    refused = [r for r in responses if r.status_code != 202]
    assert len(accepted) == JOBS_MAX_QUEUED > MODEL_ONGOING + MODEL_QUEUED
    for response in refused:
        assert response.status_code == 429 and response.headers["retry-after"]
        assert response.json()["error"]["code"] == "too_many_jobs"
    with httpx.Client(base_url=hardened_url, timeout=60) as http:
        done = [wait_job(http, r.json()["id"], finished, headers=AUTH) for r in accepted]
    assert [j["status"] for j in done] == ["succeeded"] * len(done), [j["error"] for j in done]


def test_streams_past_a_full_model_queue_get_429_before_the_200(hardened_url: str) -> None:
    # The model takes MODEL_ONGOING running + MODEL_QUEUED queued; streams past that are
    # refused like plain requests (JSON 429 with Retry-After), never a 200 with an
    # in-band error, and every admitted stream completes.
    body = {"prompt": "flood", "stream": True, "partial_images": 0, "size": "1024x1024"}

    async def flood() -> list[httpx.Response]:
        async with httpx.AsyncClient(base_url=hardened_url, timeout=180) as session:
            return await asyncio.gather(
                *(
                    session.post(GEN, json={**body, "seed": i}, headers=AUTH)
                    for i in range(3 * (MODEL_ONGOING + MODEL_QUEUED))
                )
            )

    responses = asyncio.run(flood())
    refused = [r for r in responses if r.status_code != 200]
    streamed = [r for r in responses if r.status_code == 200]
    assert refused and streamed, [r.status_code for r in responses]
    for response in refused:
        assert response.status_code == 429, response.text
        assert response.headers["content-type"].startswith("application/json")
        assert int(response.headers["retry-after"]) >= 1
        assert response.json()["error"]["code"] == "overloaded", response.text
    for response in streamed:
        assert response.headers["content-type"].startswith("text/event-stream")
        events = [
            json.loads(line[len("data: ") :])
            for line in response.text.splitlines()
            if line.startswith("data: {")
        ]
        assert [e["type"] for e in events] == ["image_generation.completed"], events


def test_storm_past_the_ingress_limit_refuses_only_in_json(hardened_url: str) -> None:
    async def storm() -> list[httpx.Response]:
        limits = httpx.Limits(max_connections=STORM + 8)
        async with httpx.AsyncClient(base_url=hardened_url, timeout=120, limits=limits) as s:
            return await asyncio.gather(
                *(
                    s.post(GEN, json={"prompt": f"s{i}", "size": "256x256"}, headers=AUTH)
                    for i in range(STORM)
                )
            )

    responses = asyncio.run(asyncio.wait_for(storm(), 240))
    refused = [r for r in responses if r.status_code != 200]
    assert len(refused) > STORM // 2 > INGRESS_LIMIT, "the storm was meant to pass the limit"
    for response in refused:
        assert response.status_code in (429, 503), response.text
        assert response.headers["content-type"].startswith("application/json"), response.text
        assert int(response.headers["retry-after"]) >= 1
        assert response.json()["error"]["type"] in ("rate_limit_error", "service_unavailable_error")
    codes = {r.json()["error"]["code"] for r in refused}
    print(f"storm of {STORM}: {len(responses) - len(refused)} ok, refusals by code {codes}")


def _ingress_actor(app: str) -> Any:
    import ray

    prefix = f"SERVE_REPLICA::{app}#Ingress#"
    [name] = [
        a["name"]
        for a in ray.util.list_named_actors(all_namespaces=True)
        if a["name"].startswith(prefix)
    ]
    return ray.get_actor(name, namespace="serve")


def test_sigkilled_ingress_holding_three_running_jobs_loses_none(
    http: httpx.Client, base_url: str
) -> None:
    import os
    import signal

    import ray

    # 4 images of 200 steps each: 2,400 image-steps, still running when the kill lands
    # even on a quiet machine (one image of 200 steps finished first in a CI run).
    body = {**LONG, "n": 4}
    made = [http.post(GEN, json={**body, "seed": i}, headers=ASYNC) for i in range(3)]
    assert [r.status_code for r in made] == [202] * 3, [r.text for r in made]
    ids = [r.json()["id"] for r in made]
    for job_id in ids:
        wait_job(http, job_id, lambda j: j["status"] == "running")
    actor = _ingress_actor(APP_NAME)
    pid = ray.get(actor.__ray_call__.remote(lambda _self: os.getpid()))
    os.kill(pid, signal.SIGKILL)

    def healthy() -> bool:
        try:
            return http.get("/health", timeout=2).status_code == 200
        except httpx.HTTPError:
            return False

    wait_until(healthy, 120, "a new ingress replica")
    done = [wait_job(http, job_id, finished, timeout_s=300) for job_id in ids]
    assert [j["status"] for j in done] == ["succeeded"] * 3, [j["error"] for j in done]
    assert max(j["attempt"] for j in done) >= 2, [j["attempt"] for j in done]
    assert all(len(j["result"]["data"]) == 4 for j in done)


def test_job_on_a_scaled_to_zero_model_completes(scaling_url: str) -> None:
    # More jobs than the cold model's queue holds: sync requests past it get 503s, jobs
    # wait queued through the cold start and all finish.
    wait_for(lambda: replica_states(deployment(ON_DEMAND)) == {}, 120, f"{ON_DEMAND} at zero")
    body = {"model": ON_DEMAND, "prompt": "wake", "size": "256x256"}
    with httpx.Client(base_url=scaling_url, timeout=60) as http:
        made = [
            http.post(GEN, json={**body, "seed": i}, headers=ASYNC) for i in range(MAX_QUEUED + 3)
        ]
        assert [r.status_code for r in made] == [202] * len(made), [r.text for r in made]
        done = [wait_job(http, r.json()["id"], finished, timeout_s=240) for r in made]
    assert [j["status"] for j in done] == ["succeeded"] * len(done), [j["error"] for j in done]
    assert all(j["model"] == ON_DEMAND and j["result"]["data"] for j in done)


S3_JOBS_APP, S3_JOBS_PREFIX = "imagegen-s3-jobs", "/s3jobs"


def _s3_jobs_app(endpoint: str, bucket: str) -> Any:
    """The S3 app's args with a result TTL longer than a restart takes, and short
    graceful shutdowns so the restart is quick."""
    from serve_app.app import build_app

    args = s3_app_args(endpoint, bucket)
    args["storage"].update(prefix="jobs-e2e/", url_ttl_s=600)
    for part in (args["models"][0], args["encoder"], args["ingress"]):
        part["deployment"]["graceful_shutdown_timeout_s"] = 1
    return build_app(args)


def test_jobs_survive_a_restart_on_the_s3_store(
    base_url: str, s3_endpoint: str, s3_bucket: str
) -> None:
    from ray import serve

    serve.run(_s3_jobs_app(s3_endpoint, s3_bucket), name=S3_JOBS_APP, route_prefix=S3_JOBS_PREFIX)
    try:
        with httpx.Client(base_url=base_url + S3_JOBS_PREFIX, timeout=60) as http:
            made = http.post(GEN, json={"prompt": "kept", "size": "256x256"}, headers=ASYNC)
            kept = wait_job(http, made.json()["id"], finished)
            assert kept["status"] == "succeeded", kept
            long = http.post(GEN, json=LONG, headers=ASYNC).json()
            wait_job(http, long["id"], lambda j: j["status"] == "running")
            serve.delete(S3_JOBS_APP)
            serve.run(
                _s3_jobs_app(s3_endpoint, s3_bucket), name=S3_JOBS_APP, route_prefix=S3_JOBS_PREFIX
            )
            again = http.get(f"{JOBS}/{kept['id']}").json()
            assert again["status"] == "succeeded" and again["result"] == kept["result"]
            # The job in flight ran again on the new app, from its request in S3: its
            # lease ran out (the ingress went first) or its model replica died under it
            # (the next attempt then waited for the new app's lease takeover).
            rerun = wait_job(http, long["id"], finished, timeout_s=300)
            assert rerun["status"] == "succeeded" and rerun["attempt"] >= 2, rerun
            listed = [j["id"] for j in http.get(JOBS, params={"limit": 100}).json()["data"]]
            assert listed[:2] == [long["id"], kept["id"]]  # newest first
    finally:
        serve.delete(S3_JOBS_APP)
