"""Each deployment scales on its own policy, for real, on local Ray.

The model deployment scales on queue depth (requests waiting for and inside its
batches); the encoder on its own ongoing requests. Both grow under load that
targets them and shrink back once it ends. Assertions are on Serve's replica
states, polled with generous bounds; the load is closed-loop and bounded.
"""

from __future__ import annotations

from tests.support.scaling_app import MODEL, Burst, deployment, replica_states, running, wait_for

ENCODER = "Encoder"
UP_TIMEOUT_S = 180
DOWN_TIMEOUT_S = 120

# Slow on the model, cheap to encode: many steps, a small jpeg.
MODEL_HEAVY = {
    "model": MODEL,
    "prompt": "burst",
    "size": "256x256",
    "num_inference_steps": 30,
    "output_format": "jpeg",
}
# Cheap on the model, slow to encode: one step, a large PNG at zlib level 9.
ENCODER_HEAVY = {
    "model": MODEL,
    "prompt": "burst",
    "size": "1792x1024",
    "num_inference_steps": 1,
    "output_format": "png",
    "output_compression": 0,
}


def settled(name: str) -> bool:
    return replica_states(name) == {"RUNNING": 1}


def test_model_grows_under_a_burst_and_shrinks_back(scaling_url: str) -> None:
    model = deployment(MODEL)
    wait_for(lambda: settled(model), DOWN_TIMEOUT_S, "the model at 1 replica")

    with Burst(scaling_url, MODEL_HEAVY, clients=8) as burst:
        wait_for(lambda: running(model) >= 2, UP_TIMEOUT_S, "the model to reach 2 replicas")

    assert set(burst.statuses) == {200}, burst.statuses  # scaling dropped nothing
    wait_for(lambda: settled(model), DOWN_TIMEOUT_S, "the model back at 1 replica")


def test_encoder_scales_on_its_own_policy(scaling_url: str) -> None:
    model = deployment(MODEL)
    wait_for(lambda: settled(model) and settled(ENCODER), DOWN_TIMEOUT_S, "both at 1 replica")

    model_replicas: list[int] = []

    def encoder_grew() -> bool:
        model_replicas.append(running(model))
        return running(ENCODER) >= 2

    with Burst(scaling_url, ENCODER_HEAVY, clients=6) as burst:
        wait_for(encoder_grew, UP_TIMEOUT_S, "the encoder to reach 2 replicas")

    assert set(burst.statuses) == {200}, burst.statuses
    # The same traffic that grew the encoder left the model at one replica.
    assert set(model_replicas) == {1}, model_replicas
    wait_for(lambda: settled(ENCODER), DOWN_TIMEOUT_S, "the encoder back at 1 replica")
