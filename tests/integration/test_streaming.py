"""stream=true over SSE, through the batched model deployment, with the openai SDK."""

from __future__ import annotations

import json
import threading
from concurrent.futures import ThreadPoolExecutor

import httpx
import openai

from tests.integration.conftest import model_replica_names, model_stats, wait_until
from tests.support.images import decode_b64


def events_of(client: openai.OpenAI, **params: object) -> list:
    return list(client.images.generate(prompt="a harbour", stream=True, **params))  # type: ignore[call-overload]


def test_partials_arrive_in_order_then_the_final(client: openai.OpenAI) -> None:
    events = events_of(client, partial_images=2, size="1536x1024")
    assert [e.type for e in events] == [
        "image_generation.partial_image",
        "image_generation.partial_image",
        "image_generation.completed",
    ]
    assert [e.partial_image_index for e in events[:2]] == [0, 1]
    for event in events:
        assert decode_b64(event.b64_json).size == (1536, 1024)
        assert event.size == "1536x1024" and event.output_format == "png"
    assert decode_b64(events[-1].b64_json).format == "PNG"


def test_zero_partials_sends_only_the_final(client: openai.OpenAI) -> None:
    events = events_of(client, partial_images=0, output_format="webp", size="256x256")
    assert [e.type for e in events] == ["image_generation.completed"]
    image = decode_b64(events[0].b64_json)
    assert (image.format, image.size) == ("WEBP", (256, 256))


def test_n_images_get_one_completed_event_each(client: openai.OpenAI) -> None:
    events = events_of(client, n=2, partial_images=1, extra_body={"seed": 77})
    partials = [e for e in events if e.type.endswith("partial_image")]
    finals = [e for e in events if e.type.endswith("completed")]
    assert [(e.partial_image_index, e.model_extra["image_index"]) for e in partials] == [
        (0, 0),
        (0, 1),
    ]
    assert [(e.model_extra["image_index"], e.model_extra["seed"]) for e in finals] == [
        (0, 77),
        (1, 78),
    ]


def test_streamed_final_matches_the_non_streamed_image(client: openai.OpenAI) -> None:
    from tests.support.images import assert_close

    events = events_of(client, partial_images=1, extra_body={"seed": 4242})
    plain = client.images.generate(prompt="a harbour", extra_body={"seed": 4242})
    assert_close(decode_b64(events[-1].b64_json), decode_b64(plain.data[0].b64_json))


def test_streamed_and_plain_requests_share_batches(client: openai.OpenAI) -> None:
    before = model_stats()
    with ThreadPoolExecutor(max_workers=4) as pool:
        # Occupy the model, then queue a mix behind it: the mix becomes one batch.
        blocker = pool.submit(
            client.images.generate,
            prompt="blocker",
            n=4,
            extra_body={"num_inference_steps": 60},
        )
        wait_until(lambda: model_stats()["batches"] > before["batches"], 30, "blocker to start")
        streamed = pool.submit(events_of, client, partial_images=2)
        plain = [pool.submit(client.images.generate, prompt=f"plain {i}") for i in range(2)]
        blocker.result()
        events = streamed.result()
        assert all(p.result().data[0].b64_json for p in plain)
    assert events[-1].type == "image_generation.completed"
    after = model_stats()
    assert after["mixed_batches"] > before["mixed_batches"]
    assert after["streaming_requests"] - before["streaming_requests"] == 1


def test_client_disconnect_cancels_the_request(base_url: str, client: openai.OpenAI) -> None:
    before = model_stats()
    body = {
        "prompt": "a long one",
        "stream": True,
        "partial_images": 3,
        "n": 2,
        "num_inference_steps": 200,
    }
    with (
        httpx.Client(base_url=base_url, timeout=60) as http,
        http.stream("POST", "/v1/images/generations", json=body) as response,
    ):
        assert response.status_code == 200
        for line in response.iter_lines():
            if line.startswith("event: image_generation.partial_image"):
                break  # leave after the first preview: closing drops the connection
    after = wait_until(
        lambda: (s := model_stats())["dropped_images"] > before["dropped_images"] and s,
        60,
        "the model to drop the cancelled images",
    )
    assert after["cancelled_requests"] > before["cancelled_requests"]
    assert after["steps_saved"] > before["steps_saved"]
    assert client.images.generate(prompt="after the disconnect").data[0].b64_json


def test_error_mid_stream_reaches_the_sdk(client: openai.OpenAI, http: httpx.Client) -> None:
    """Kill the model replica while it streams: the SDK raises, and the server recovers."""
    import ray

    [replica] = model_replica_names()
    started = threading.Event()
    errors: list[BaseException] = []

    def consume() -> None:
        try:
            for event in client.images.generate(
                prompt="doomed",
                stream=True,
                partial_images=3,
                n=2,
                extra_body={"num_inference_steps": 200},
            ):
                if event.type.endswith("partial_image"):
                    started.set()
        except openai.APIError as exc:
            errors.append(exc)

    worker = threading.Thread(target=consume)
    worker.start()
    assert started.wait(60), "no preview arrived"
    ray.kill(ray.get_actor(replica, namespace="serve"), no_restart=False)
    worker.join(60)
    assert not worker.is_alive()
    assert len(errors) == 1
    assert "Traceback" not in str(errors[0])
    wait_until(lambda: http.get("/ready").status_code == 200, 120, "the replica to come back")
    assert client.images.generate(prompt="recovered").data[0].b64_json


def test_sse_frames_are_well_formed(http: httpx.Client) -> None:
    response = http.post(
        "/v1/images/generations", json={"prompt": "x", "stream": True, "partial_images": 1}
    )
    assert response.headers["content-type"].startswith("text/event-stream")
    frames = [f for f in response.text.split("\n\n") if f]
    for frame in frames:
        event_line, data_line = frame.split("\n")
        assert event_line.startswith("event: ") and data_line.startswith("data: ")
        assert json.loads(data_line[6:])["type"] == event_line[7:]
