"""Scale to zero: an idle model has no replica; the first request wakes it and waits.

Requests that arrive during the cold start queue at the ingress's handle; only
past the model's ``max_queued_requests`` does a client get 503 with Retry-After
(a cold start, not an overload: see ``common/errors.py``). Waking one model
leaves every other model as it was.
"""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor

import httpx
import openai

from tests.support.images import decode_b64
from tests.support.scaling_app import (
    HUGE,
    HUGE_CPUS,
    MAX_QUEUED,
    MODEL,
    ON_DEMAND,
    SPARE,
    deployment,
    replica_states,
    running,
    wait_for,
)

ASLEEP_TIMEOUT_S = 120  # downscale_to_zero_delay_s is 3 s here; stopping takes a few more
BODY = {"model": ON_DEMAND, "prompt": "wake up", "size": "256x256", "output_format": "jpeg"}


def asleep(model_id: str) -> bool:
    return replica_states(deployment(model_id)) == {}


def test_first_request_after_idle_waits_for_the_cold_start(scaling_url: str) -> None:
    wait_for(lambda: asleep(ON_DEMAND), ASLEEP_TIMEOUT_S, f"{ON_DEMAND} at zero replicas")
    always_on = running(deployment(MODEL))
    client = openai.OpenAI(base_url=f"{scaling_url}/v1", api_key="unused", max_retries=0)

    started = time.perf_counter()
    result = client.images.generate(model=ON_DEMAND, prompt="wake up", size="256x256")
    cold_start_s = time.perf_counter() - started

    assert decode_b64(result.data[0].b64_json).size == (256, 256)
    assert running(deployment(ON_DEMAND)) == 1
    assert asleep(SPARE)  # only the requested model woke
    assert running(deployment(MODEL)) == always_on
    print(f"\ncold start of {ON_DEMAND}: {cold_start_s:.2f} s (first request after idle)")


def test_cold_start_queues_then_sheds_past_max_queued_requests(scaling_url: str) -> None:
    wait_for(lambda: asleep(ON_DEMAND), ASLEEP_TIMEOUT_S, f"{ON_DEMAND} back at zero replicas")
    total = MAX_QUEUED + 3

    def post(_: int) -> httpx.Response:
        with httpx.Client(base_url=scaling_url, timeout=300) as session:
            return session.post("/v1/images/generations", json=BODY)

    with ThreadPoolExecutor(total) as pool:
        responses = list(pool.map(post, range(total)))

    served = [r for r in responses if r.status_code == 200]
    shed = [r for r in responses if r.status_code == 503]
    assert len(served) + len(shed) == total, [r.status_code for r in responses]
    # Everything within the queue limit waited through the cold start and succeeded.
    assert len(served) >= MAX_QUEUED
    assert shed, "requests past max_queued_requests must be refused while the model starts"
    for response in shed:
        assert response.headers["retry-after"] == "10"  # cold_start_retry_after_s
        error = response.json()["error"]
        assert error["type"] == "service_unavailable_error"
        assert error["code"] == "model_cold_start"
    assert asleep(SPARE)


def test_a_model_the_cluster_cannot_place_is_a_503_naming_what_it_lacks(
    scaling_url: str,
) -> None:
    """Its replica asks for more CPUs than the cluster has: after its cold-start timeout
    the request is a 503 with Retry-After and the missing resources, not a hang."""
    started = time.monotonic()
    with httpx.Client(base_url=scaling_url, timeout=60) as session:
        response = session.post("/v1/images/generations", json={**BODY, "model": HUGE})
    assert response.status_code == 503, response.text
    assert response.headers["retry-after"] == "7"
    error = response.json()["error"]
    assert error["code"] == "model_unschedulable"
    assert f"CPU={HUGE_CPUS}" in error["message"] and "CPU (needs" in error["message"]
    assert time.monotonic() - started < 30
    assert running(deployment(HUGE)) == 0
