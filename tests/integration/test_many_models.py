"""Several models, each its own deployment with its own defaults, aliases and replicas.

The ingress routes by ``model`` (id or alias); ``/v1/models`` lists them all.
"""

from __future__ import annotations

import openai

from tests.support import handles
from tests.support.images import assert_close, decode_b64
from tests.support.scaling_app import (
    MODEL,
    ON_DEMAND,
    SCALING_APP,
    SPARE,
    deployment,
    replica_states,
    running,
    wait_for,
)


def stats(model_id: str) -> dict:
    return handles.call(SCALING_APP, deployment(model_id), "stats")


def test_models_route_by_name_with_their_own_defaults_and_replicas(scaling_url: str) -> None:
    client = openai.OpenAI(base_url=f"{scaling_url}/v1", api_key="unused", max_retries=0)
    listed = {card.id: card.model_extra.get("root") for card in client.models.list()}
    assert listed[MODEL] is None and listed[ON_DEMAND] is None and listed[SPARE] is None
    assert listed["dall-e-3"] == MODEL and listed["tiny-fast"] == ON_DEMAND

    # The alias reaches the 4-step model (waking it if it is asleep), not the other.
    wait_for(lambda: running(deployment(MODEL)) == 1, 120, f"{MODEL} at 1 replica")
    before = stats(MODEL)["requests"]
    fast = client.images.with_raw_response.generate(
        model="tiny-fast", prompt="a fox", size="256x256", extra_body={"seed": 11}
    )
    assert fast.headers["x-imagegen-model"] == ON_DEMAND
    assert running(deployment(ON_DEMAND)) == 1  # woken (it idles back to 0 after 3 s)
    assert stats(MODEL)["requests"] == before
    slow = client.images.with_raw_response.generate(
        model="dall-e-3",
        prompt="a fox",
        size="256x256",
        response_format="b64_json",  # dall-e-3's default is url, as OpenAI's
        extra_body={"seed": 11},
    )
    assert slow.headers["x-imagegen-model"] == MODEL
    assert stats(MODEL)["requests"] == before + 1

    # Per-model defaults: the 4-step model's default equals the other model run
    # with 4 steps and no guidance (they share the built-in weights).
    fast_image = decode_b64(fast.parse().data[0].b64_json)
    same_settings = client.images.generate(
        model=MODEL,
        prompt="a fox",
        size="256x256",
        extra_body={"seed": 11, "num_inference_steps": 4, "guidance_scale": 0.0},
    )
    assert_close(fast_image, decode_b64(same_settings.data[0].b64_json))
    slow_image = decode_b64(slow.parse().data[0].b64_json)
    assert slow_image.tobytes() != fast_image.tobytes()  # 20 steps with guidance differ

    # Each model has its own replicas: the unused copy never woke.
    assert running(deployment(MODEL)) == 1
    assert replica_states(deployment(SPARE)) == {}
