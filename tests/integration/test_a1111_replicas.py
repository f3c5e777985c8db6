"""A1111's /progress, /interrupt and /skip with several ingress and model replicas.

Its own app, ``imagegen-a1111-replicas``: 2 ingress replicas, 2 model replicas that
take one request each (``max_ongoing_requests: 1``, so two running jobs are on two
different model replicas and a third waits in the ingress's router), and two Basic-auth
callers. Alice's two jobs (one sampling on one replica, one queued) and Bob's (sampling
on the other replica) run at once. Every /progress call, whichever ingress replica
answers it, reports the caller's own jobs; Alice's /interrupt ends both of hers early
with a 200; Bob's job runs all its steps.
"""

from __future__ import annotations

import base64
import shutil
import tempfile
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest

from tests.integration.conftest import app_args_for_tests, wait_until
from tests.support import handles
from tests.support.images import decode_b64

APP = "imagegen-a1111-replicas"
PREFIX = "/a1111-replicas"
MODEL_DEPLOYMENT = "Model:tiny-sdxl"
ALICE, BOB = ("alice", "alice-pass"), ("bob", "bob-pass")
ALICE_STEPS, BOB_STEPS = 200, 120


def replicas_args(image_dir: str, auth_file: str) -> dict[str, Any]:
    args = app_args_for_tests(image_dir, auth_file)
    model = args["models"][0]
    model["max_images_per_request"] = 1
    model["batching"] = {**model["batching"], "max_batch_size": 1}
    model["deployment"] = {
        "num_replicas": 2,
        "max_ongoing_requests": 1,  # a running job holds its replica
        "ray_actor_options": {"num_cpus": 0.1},
    }
    args["models"] = [model]
    args["default_model"] = model["id"]
    args["ingress"]["deployment"] = {
        **args["ingress"]["deployment"],
        "num_replicas": 2,
        "ray_actor_options": {"num_cpus": 0.05},
    }
    args["encoder"]["deployment"] = {"num_replicas": 1, "ray_actor_options": {"num_cpus": 0.05}}
    return args


@pytest.fixture(scope="module")
def url(ray_serve: int, image_dir: str) -> Iterator[str]:
    from ray import serve

    from serve_app.app import build_app

    secret_dir = tempfile.mkdtemp(prefix="imagegen-a1111-users-")
    auth_file = Path(secret_dir) / "a1111-auth"
    auth_file.write_text(f"{ALICE[0]}:{ALICE[1]},{BOB[0]}:{BOB[1]}")
    serve.run(build_app(replicas_args(image_dir, str(auth_file))), name=APP, route_prefix=PREFIX)
    try:
        yield f"http://127.0.0.1:{ray_serve}{PREFIX}/sdapi/v1"
    finally:
        serve.delete(APP)
        shutil.rmtree(secret_dir, ignore_errors=True)


def auth(user: tuple[str, str]) -> dict[str, str]:
    token = base64.b64encode(f"{user[0]}:{user[1]}".encode()).decode()
    return {"Authorization": f"Basic {token}"}


def progress(url: str, user: tuple[str, str]) -> dict[str, Any]:
    response = httpx.get(f"{url}/progress", headers=auth(user), timeout=30)
    assert response.status_code == 200, response.text
    return response.json()


def txt2img(url: str, user: tuple[str, str], steps: int, seed: int) -> httpx.Response:
    body = {"prompt": "a harbour", "steps": steps, "width": 1024, "height": 1024, "seed": seed}
    return httpx.post(f"{url}/txt2img", json=body, headers=auth(user), timeout=600)


def in_background(results: dict[str, httpx.Response], key: str, *args: Any) -> threading.Thread:
    thread = threading.Thread(target=lambda: results.__setitem__(key, txt2img(*args)))
    thread.start()
    return thread


def model_calls() -> int:
    """UNet calls of both model replicas together (asked once they are idle: a
    replica takes one request at a time, so ``stats`` waits behind a running job)."""
    seen: dict[tuple[Any, ...], int] = {}
    for _ in range(40):
        stats = handles.call(APP, MODEL_DEPLOYMENT, "stats", timeout_s=60)
        key = (stats["unet_calls"], stats["requests"], stats["images"], stats["dropped_images"])
        seen[key] = stats["unet_calls"]
        if len(seen) == 2:
            return sum(seen.values())
    # 40 calls never reach just one of two replicas: both report the same counters.
    [calls] = seen.values()
    return 2 * calls


def test_interrupt_reaches_the_callers_jobs_on_any_replica_and_no_one_elses(url: str) -> None:
    wait_until(lambda: progress(url, ALICE)["state"]["job_count"] == 0, 120, "the app")
    calls_before = model_calls()
    results: dict[str, httpx.Response] = {}
    first = in_background(results, "alice-1", url, ALICE, ALICE_STEPS, 1)
    wait_until(lambda: progress(url, ALICE)["state"]["sampling_step"] >= 1, 120, "alice sampling")
    bob = in_background(results, "bob", url, BOB, BOB_STEPS, 2)
    wait_until(lambda: progress(url, BOB)["state"]["sampling_step"] >= 1, 120, "bob sampling")
    # Both model replicas are busy (one request each): Alice's second job waits.
    second = in_background(results, "alice-2", url, ALICE, ALICE_STEPS, 3)
    wait_until(lambda: progress(url, ALICE)["state"]["job_count"] == 2, 60, "alice's 2nd job")
    # Progress through whichever ingress replica answers: always the caller's own jobs.
    for _ in range(8):
        mine, theirs = progress(url, ALICE)["state"], progress(url, BOB)["state"]
        assert (mine["job_count"], mine["sampling_steps"]) == (2, ALICE_STEPS)
        assert (theirs["job_count"], theirs["sampling_steps"]) == (1, BOB_STEPS)
        assert not (mine["interrupted"] or theirs["interrupted"])
    interrupted = httpx.post(f"{url}/interrupt", headers=auth(ALICE), timeout=30)
    assert (interrupted.status_code, interrupted.json()) == (200, None)
    bob_now = progress(url, BOB)["state"]
    assert bob_now["job_count"] == 1 and bob_now["interrupted"] is False  # still running
    for thread in (first, second):
        thread.join(300)
        assert not thread.is_alive()
    for key in ("alice-1", "alice-2"):
        assert results[key].status_code == 200, results[key].text
        assert decode_b64(results[key].json()["images"][0]).size == (1024, 1024)
    assert progress(url, ALICE)["state"]["job_count"] == 0
    bob.join(600)
    assert not bob.is_alive() and results["bob"].status_code == 200, results["bob"].text
    # Bob's job ran to its end: the same request alone gives the same image.
    alone = txt2img(url, BOB, BOB_STEPS, 2)
    assert alone.status_code == 200, alone.text
    got, want = (np.asarray(decode_b64(r.json()["images"][0]), dtype=np.int16)
                 for r in (results["bob"], alone))  # fmt: skip
    assert np.abs(got - want).mean() < 1.0
    # Alice's two jobs stopped early: 400 steps would have run without the interrupt.
    calls = model_calls() - calls_before
    assert 2 * BOB_STEPS <= calls < 2 * BOB_STEPS + ALICE_STEPS


def test_skip_ends_only_the_callers_running_job(url: str) -> None:
    calls_before = model_calls()
    results: dict[str, httpx.Response] = {}
    running = in_background(results, "alice", url, ALICE, ALICE_STEPS, 4)
    wait_until(lambda: progress(url, ALICE)["state"]["sampling_step"] >= 1, 120, "alice sampling")
    skipped = httpx.post(f"{url}/skip", headers=auth(BOB), timeout=30)
    assert (skipped.status_code, skipped.json()) == (200, None)
    # Bob's skip is Bob's alone: Alice's job samples on.
    step = progress(url, ALICE)["state"]["sampling_step"]
    wait_until(lambda: progress(url, ALICE)["state"]["sampling_step"] > step + 2, 120, "steps")
    assert progress(url, ALICE)["state"]["skipped"] is False
    skipped = httpx.post(f"{url}/skip", headers=auth(ALICE), timeout=30)
    assert skipped.status_code == 200
    running.join(300)
    assert not running.is_alive() and results["alice"].status_code == 200
    assert decode_b64(results["alice"].json()["images"][0]).size == (1024, 1024)
    assert progress(url, ALICE)["state"]["job_count"] == 0
    assert model_calls() - calls_before < ALICE_STEPS  # it stopped early
