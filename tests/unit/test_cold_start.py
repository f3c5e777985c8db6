"""The cold-start guard: a scale-to-zero model whose replica never runs is a 503."""

from __future__ import annotations

import asyncio

import pytest

from common.errors import APIError
from common.model_config import ModelConfig
from serve_app import cold_start
from serve_app.cold_start import guard_cold_start, required_resources


@pytest.fixture(autouse=True)
def fast_polls(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(cold_start, "POLL_S", 0.05)


def model(**deployment: object) -> ModelConfig:
    return ModelConfig.model_validate(
        {
            "id": "m",
            "source": "builtin:tiny-sdxl",
            "cold_start_timeout_s": 0.2,
            "cold_start_retry_after_s": 9,
            "deployment": deployment,
        }
    )


async def test_no_replica_within_the_timeout_is_a_503_naming_the_missing_resources() -> None:
    cancelled = asyncio.Event()

    async def forever() -> None:
        try:
            await asyncio.sleep(60)
        finally:
            cancelled.set()

    async def none_running(_: ModelConfig) -> int:
        return 0

    m = model(ray_actor_options={"num_cpus": 8, "num_gpus": 1, "resources": {"tpu": 2}})
    with pytest.raises(APIError) as err:
        await guard_cold_start(m, forever(), none_running, lambda: {"CPU": 1.5, "GPU": 0.0})
    assert err.value.status == 503 and err.value.headers == {"retry-after": "9"}
    assert err.value.code == "model_unschedulable"
    message = err.value.message
    assert "CPU=8, GPU=1, tpu=2" in message and "CPU (needs 8, 1.5 free)" in message
    assert "tpu (needs 2, 0 free)" in message
    await asyncio.wait_for(cancelled.wait(), 1)  # the request itself was cancelled


async def test_a_replica_that_starts_lets_the_request_finish() -> None:
    counts = iter([0, 1])

    async def starting(_: ModelConfig) -> int:
        return next(counts, 1)

    async def slow() -> str:
        await asyncio.sleep(0.4)  # longer than the cold-start timeout
        return "done"

    assert await guard_cold_start(model(), slow(), starting) == "done"


def test_required_resources_default_to_one_cpu() -> None:
    assert required_resources(model()) == {"CPU": 1.0}
