"""The model server's LoRA admission: loads run off the pipeline thread, pins hold adapters."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Sequence
from typing import Any

import numpy as np
import pytest
from ray.serve import batching as serve_batching

from common.errors import APIError, invalid
from common.job import GenerationJob, LoraRef
from deployments.model.request_mode.batching import GenerationGroup
from deployments.model.request_mode.engine import GroupOutput
from deployments.model.server import ModelServer


@pytest.fixture(autouse=True)
def _no_replica_context(monkeypatch: pytest.MonkeyPatch) -> None:
    """``@serve.batch`` warns through the replica context, which tests have none of."""
    monkeypatch.setattr(
        serve_batching._BatchQueue,
        "_warn_if_max_batch_size_exceeds_max_ongoing_requests",
        lambda self: None,
    )


def seeds_of(stack: np.ndarray) -> list[int]:
    return [int(img[0, 0, 0]) for img in stack]


class SlowBank:
    """Stands for ``LoraBank``: ``ensure`` blocks until released, and records pins."""

    def __init__(self) -> None:
        self.release = threading.Event()
        self.loading = threading.Event()
        self.threads: list[str] = []
        self.ready: set[str] = set()
        self.pins: dict[str, int] = {}
        self.on_load: Any = None

    def is_loaded(self, name: str) -> bool:
        return name in self.ready

    def ensure(self, refs: Sequence[LoraRef]) -> None:
        self.threads.append(threading.current_thread().name)
        self.loading.set()
        self.release.wait(10)
        for index, ref in enumerate(refs):
            if ref.name == "broken":
                raise invalid(
                    "LoRA adapter 'broken' is corrupt.", f"loras[{index}]", "invalid_lora"
                )
            self.ready.add(ref.name)

    def pin(self, names: Sequence[str]) -> None:
        for name in names:
            self.pins[name] = self.pins.get(name, 0) + 1

    def unpin(self, names: Sequence[str]) -> None:
        for name in names:
            self.pins[name] -= 1

    def loaded(self) -> dict[str, Any]:
        return {}


class LoraEngine:
    """Fills each image with its seed; has a (slow) LoRA bank."""

    def __init__(self, config: Any) -> None:
        self.loras = SlowBank()

    def generate(self, group: GenerationGroup, observer: Any = None) -> GroupOutput:
        images = [np.full((group.height, group.width, 3), s % 256, np.uint8) for s in group.seeds]
        return GroupOutput(np.stack(images), list(range(group.size)))


def make_server(**overrides: Any) -> ModelServer:
    # The fake engine has no step runner: these tests drive the request path (the step
    # path calls the same pin/load/unpin around its own loop, test_step_loop.py).
    config = {
        "id": "m",
        "source": "builtin:tiny-sdxl",
        "warmup": False,
        "batching": {"mode": "request"},
        **overrides,
    }
    server = ModelServer(config, engine_factory=LoraEngine)
    server.reconfigure(server.config.batching.model_dump())
    return server


def job(rid: str, seed: int, *loras: str) -> GenerationJob:
    refs = tuple(LoraRef(name) for name in loras)
    return GenerationJob(rid, "p", None, (seed,), 16, 16, 4, 5.0, loras=refs)


async def test_rows_without_the_loading_adapter_keep_running() -> None:
    server = make_server()
    bank: SlowBank = server._engine.loras  # type: ignore[attr-defined]
    waiting = asyncio.create_task(server.generate_pixels(job("a", 1, "style")))
    await asyncio.to_thread(bank.loading.wait, 5)
    plain = await asyncio.wait_for(server.generate_pixels(job("b", 2)), 5)  # not blocked by loading
    assert seeds_of(plain) == [2] and not waiting.done()
    bank.release.set()
    assert seeds_of(await asyncio.wait_for(waiting, 5)) == [1]
    assert bank.threads == ["lora-load_0"]
    assert bank.pins == {"style": 0}  # pinned while queued and running, released after


async def test_a_bad_adapter_fails_its_request_only() -> None:
    server = make_server()
    bank: SlowBank = server._engine.loras  # type: ignore[attr-defined]
    bank.release.set()
    with pytest.raises(APIError) as caught:
        await server.generate_pixels(job("a", 1, "style", "broken"))
    assert (caught.value.param, caught.value.code) == ("loras[1]", "invalid_lora")
    assert bank.pins == {"style": 0, "broken": 0}
    assert seeds_of(await server.generate_pixels(job("b", 2, "style"))) == [2]


async def test_too_many_adapters_are_refused_by_the_replica_too() -> None:
    server = make_server(loras={"max_per_request": 2})
    with pytest.raises(APIError) as caught:
        await server.generate_pixels(job("a", 1, "x", "y", "z"))
    assert caught.value.code == "too_many_loras"
