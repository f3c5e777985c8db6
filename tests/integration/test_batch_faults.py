"""One request of a batch fails inside the pipeline: only it fails, over real HTTP.

The ``imagegen-faulty`` app runs the real diffusers engine with one injected fault:
a pipeline call whose prompts include :data:`POISON` raises, as an out-of-memory or a
bad input would. A poisoned request batched with a healthy one makes the batch's
call fail; the model deployment splits it and retries each request alone, so the
healthy request still gets its image and only the poisoned one gets a clean 500.
"""

from __future__ import annotations

import shutil
import tempfile
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import pytest

from deployments.model.request_mode.batching import GenerationGroup
from deployments.model.request_mode.engine import DiffusersEngine, GroupOutput
from tests.integration.conftest import app_args_for_tests, wait_until
from tests.support import handles
from tests.support.images import decode_b64

FAULTY_APP, FAULTY_PREFIX = "imagegen-faulty", "/faulty"
POISON = "poisoned-prompt"
HOLD = "hold-until:"  # + a path: the call waits until that file exists


class PoisonedEngine(DiffusersEngine):
    """The real engine, except that a call including a poisoned prompt raises, and a
    call whose prompt is ``HOLD + path`` waits for that file first (a batch that stays
    running until the test lets it go)."""

    def generate(self, group: GenerationGroup, observer: Any = None) -> GroupOutput:
        if any(POISON in prompt for prompt in group.prompts):
            raise RuntimeError("injected pipeline failure")
        for prompt in group.prompts:
            if prompt.startswith(HOLD):
                release = Path(prompt.removeprefix(HOLD))
                deadline = time.monotonic() + 60
                while not release.exists() and time.monotonic() < deadline:
                    time.sleep(0.02)
        return super().generate(group, observer)


@pytest.fixture(scope="module")
def faulty(ray_serve: int) -> Iterator[tuple[str, Any]]:
    """(base URL, model handle) of the faulty app; deleted after the module."""
    import sys

    from ray import cloudpickle, serve

    from serve_app.app import build_app_with_engine

    # Replicas cannot import the tests package: ship this module by value.
    cloudpickle.register_pickle_by_value(sys.modules[__name__])
    image_dir = tempfile.mkdtemp(prefix="imagegen-faulty-")
    args = app_args_for_tests(image_dir)
    model = args["models"][0]
    # The injected faults live in the request path's engine.generate, and the test
    # asserts request-mode internals (the gate, the split batch): pinned to that mode.
    # Step mode's failure isolation: tests/unit/test_step_loop.py and
    # tests/integration/test_step_batching.py.
    model["batching"] = {"mode": "request", "max_batch_size": 4, "batch_wait_timeout_s": 0.0}
    model["max_images_per_request"] = 4
    model["deployment"] = {"num_replicas": 1, "ray_actor_options": {"num_cpus": 0.05}}
    args["models"] = [model]
    args["default_model"] = model["id"]
    for part in ("encoder", "ingress"):
        args[part]["deployment"] = {"num_replicas": 1, "ray_actor_options": {"num_cpus": 0.05}}
    serve.run(
        build_app_with_engine(args, PoisonedEngine), name=FAULTY_APP, route_prefix=FAULTY_PREFIX
    )
    yield f"http://127.0.0.1:{ray_serve}{FAULTY_PREFIX}", f"Model:{model['id']}"
    serve.delete(FAULTY_APP)
    shutil.rmtree(image_dir, ignore_errors=True)


def test_a_failing_request_fails_alone_and_its_batch_mates_succeed(
    faulty: tuple[str, Any],
) -> None:
    base_url, model_deployment = faulty

    def stats() -> dict[str, Any]:
        return handles.call(FAULTY_APP, model_deployment, "stats")

    before = stats()

    def post(prompt: str, steps: int) -> httpx.Response:
        body = {"prompt": prompt, "size": "256x256", "num_inference_steps": steps, "seed": 5}
        return httpx.post(f"{base_url}/v1/images/generations", json=body, timeout=120)

    release = Path(tempfile.mkdtemp(prefix="imagegen-hold-")) / "release"

    with ThreadPoolExecutor(3) as pool:
        # A held request keeps the replica busy, so the next two wait and share a batch.
        blocker = pool.submit(post, f"{HOLD}{release}", 4)
        wait_until(lambda: stats()["requests"] > before["requests"], 60, "the held batch")
        poisoned = pool.submit(post, f"a {POISON}", 4)
        healthy = pool.submit(post, "a harbour", 4)
        wait_until(lambda: stats()["waiting_requests"] == 2, 60, "two waiting requests")
        release.touch()
        responses = [f.result() for f in (blocker, poisoned, healthy)]
    shutil.rmtree(release.parent, ignore_errors=True)

    assert responses[0].status_code == 200
    bad, good = responses[1], responses[2]
    assert good.status_code == 200
    assert decode_b64(good.json()["data"][0]["b64_json"]).size == (256, 256)
    assert bad.status_code == 500
    error = bad.json()["error"]
    assert error["type"] == "server_error" and "Traceback" not in error["message"]
    after = stats()
    assert after["split_batches"] - before["split_batches"] == 1
    assert after["failed_requests"] - before["failed_requests"] == 1
    assert after["batch_size_histogram"].get(2, 0) > before["batch_size_histogram"].get(2, 0)
