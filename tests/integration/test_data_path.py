"""What crosses the model deployment's handle: encoded bytes or URLs, never arrays.

The model replica hands its uint8 rows to the encoder deployment itself and answers
the ingress with ``EncodedImage``s only (issue 27). Two ways to see it: the replica's
own byte counters (``stats()``: uint8 pixel bytes sent to the encoder, pickled bytes
answered to callers) over real HTTP requests through the ingress, and the pickled
size of what a handle call from this test process gets back.
"""

from __future__ import annotations

import base64
import dataclasses
import pickle
import time
from typing import Any

import httpx
import numpy as np

from common.job import EncodedImage, EncodeSpec, GenerationJob, ImageEvent
from tests.integration.conftest import APP_NAME, MODEL_DEPLOYMENT, model_stats
from tests.support import handles

ROUTE = "/v1/images/generations"
# tiny-sdxl generates a 1024x1024 request at 128x128 (generation_scale 0.125).
FINAL_BYTES = 128 * 128 * 3  # one image's uint8 pixels; float32 would be 4x
FAST = {"size": "1024x1024", "num_inference_steps": 4}


def counters() -> dict[str, int]:
    stats = model_stats()
    return {k: stats[k] for k in ("pixel_bytes_to_encoder", "bytes_to_callers")}


def moved_during(action: Any) -> tuple[dict[str, int], Any]:
    before = counters()
    result = action()
    after = counters()
    return {k: after[k] - before[k] for k in after}, result


def test_a_plain_url_request_brings_back_only_urls(http: httpx.Client) -> None:
    body = {"prompt": "a lighthouse", "n": 2, "response_format": "url", **FAST}
    moved, response = moved_during(lambda: http.post(ROUTE, json=body))
    assert response.status_code == 200, response.text
    assert moved["pixel_bytes_to_encoder"] == 2 * FINAL_BYTES  # uint8 rows, model -> encoder
    # Two URLs and the list around them, against 98 KB of pixels.
    assert 0 < moved["bytes_to_callers"] < 1500


def test_a_plain_b64_request_brings_back_the_encoded_bytes_alone(http: httpx.Client) -> None:
    body = {"prompt": "a lighthouse", "output_format": "jpeg", **FAST}
    moved, response = moved_during(lambda: http.post(ROUTE, json=body))
    assert response.status_code == 200, response.text
    encoded = len(response.json()["data"][0]["b64_json"])
    assert moved["pixel_bytes_to_encoder"] == FINAL_BYTES
    assert encoded <= moved["bytes_to_callers"] < encoded + 300


def test_a_stream_brings_back_encoded_previews_and_final(http: httpx.Client) -> None:
    body = {"prompt": "a harbour", "stream": True, "partial_images": 2, **FAST}
    body["num_inference_steps"] = 8
    moved, lines = moved_during(lambda: list(_sse_data(http, body)))
    sent = sum(len(line["b64_json"]) for line in lines if "b64_json" in line)
    assert [line["type"] for line in lines][-1] == "image_generation.completed"
    # The final's uint8 rows plus two latent-size previews went to the encoder ...
    assert FINAL_BYTES < moved["pixel_bytes_to_encoder"] < 2 * FINAL_BYTES
    # ... and only the base64 the client got came back, with a few hundred bytes of
    # event framing per event.
    assert sent <= moved["bytes_to_callers"] < sent + 300 * len(lines)


def test_an_async_job_with_progress_brings_back_urls_and_progress(http: httpx.Client) -> None:
    body = {"prompt": "a fox", "response_format": "url", **FAST}

    def run_job() -> dict[str, Any]:
        submitted = http.post(ROUTE, json=body, headers={"prefer": "respond-async"})
        assert submitted.status_code == 202, submitted.text
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            job = http.get(f"/v1/images/jobs/{submitted.json()['id']}").json()
            if job["status"] not in ("queued", "running"):
                return job
            time.sleep(0.1)
        raise AssertionError("the job did not finish")

    moved, job = moved_during(run_job)
    assert job["status"] == "succeeded", job
    assert moved["pixel_bytes_to_encoder"] == FINAL_BYTES
    # A URL and one small progress event per step.
    assert 0 < moved["bytes_to_callers"] < 300 * (FAST["num_inference_steps"] + 4)


def test_handle_calls_return_no_arrays() -> None:
    """Measured on this side of the handle: the pickled size of what came back."""
    job = GenerationJob("handle-bytes", "a boat", None, (1, 2), 128, 128, 6, 5.0)
    spec = EncodeSpec("handle-bytes", 64, 64, "png", None, "b64_json")
    images = handles.call(APP_NAME, MODEL_DEPLOYMENT, "generate", job, spec)
    assert all(isinstance(image, EncodedImage) for image in images)
    encoded = sum(len(image.b64_json or "") for image in images)
    assert len(pickle.dumps(images)) < encoded + 500 < 2 * FINAL_BYTES
    streamed = dataclasses.replace(job, request_id="handle-stream", partial_images=2)
    events = handles.stream(APP_NAME, MODEL_DEPLOYMENT, "generate_stream", streamed, spec)
    assert [e.kind for e in events] == ["partial", "partial", "final"]
    for event in events:
        assert isinstance(event, ImageEvent) and event.pixels is None
        assert not any(isinstance(v, np.ndarray) for v in vars(event).values())
        size = sum(len(base64.b64decode(image.b64_json or "")) for image in event.images)
        assert len(pickle.dumps(event)) < 2 * size + 500


def _sse_data(http: httpx.Client, body: dict[str, Any]) -> Any:
    import json

    with http.stream("POST", ROUTE, json=body) as response:
        assert response.status_code == 200
        for line in response.iter_lines():
            if line.startswith("data: ") and line != "data: [DONE]":
                yield json.loads(line[len("data: ") :])
