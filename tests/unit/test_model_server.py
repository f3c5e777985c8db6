"""The model server's request-mode batching, with a fake engine and no Ray cluster.

Step mode (the default) needs the real engine's step primitives; it is tested in
test_step_loop.py. These tests pin ``batching.mode: request``.

``@serve.batch`` runs here on a plain event loop. Its only replica-context call is a
warning about ``max_ongoing_requests``, which is patched out for these tests.
"""

from __future__ import annotations

import asyncio
import dataclasses
import threading
from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest
from ray.serve import batching as serve_batching

from common.job import GenerationJob
from deployments.model.request_mode.batching import GenerationGroup
from deployments.model.request_mode.engine import GroupOutput
from deployments.model.scheduler.submission import Submission
from deployments.model.server import ModelServer


@pytest.fixture(autouse=True)
def _no_replica_context(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    monkeypatch.setattr(
        serve_batching._BatchQueue,
        "_warn_if_max_batch_size_exceeds_max_ongoing_requests",
        lambda self: None,
    )
    yield


class FakeEngine:
    """Fills each image with its seed; steps through the observer like the real engine.

    ``pause(k)`` makes call ``k`` (0-based) wait inside its first step until the
    returned event is set, so tests can queue requests behind a running batch or
    cancel one mid-call.
    """

    loras = None

    def __init__(self, config: Any) -> None:
        self.calls: list[list[int]] = []
        self.pauses: dict[int, threading.Event] = {}
        self.entered = threading.Event()
        self.fail_next = False
        self.steps_run: list[int] = []  # rows denoised at each step, across calls

    def pause(self, call: int) -> threading.Event:
        return self.pauses.setdefault(call, threading.Event())

    def generate(self, group: GenerationGroup, observer: Any = None) -> GroupOutput:
        call = len(self.calls)
        self.calls.append(list(group.seeds))
        rows = list(range(group.size))
        for step in range(1, group.steps + 1):
            self.steps_run.append(len(rows))
            if step == 1 and call in self.pauses:
                self.entered.set()
                self.pauses[call].wait(timeout=10)
            if self.fail_next:
                self.fail_next = False
                raise RuntimeError("engine exploded")
            if observer is not None:
                seeds = [group.seeds[r] for r in rows]
                preview = lambda seeds=seeds: np.stack(  # noqa: E731
                    [np.full((2, 2, 3), s % 256, np.uint8) for s in seeds]
                )
                drop = observer(step, group.steps, list(rows), preview)
                rows = [r for r in rows if r not in drop]
        images = [
            np.full((group.height, group.width, 3), group.seeds[r] % 256, np.uint8) for r in rows
        ]
        stack = (
            np.stack(images) if images else np.zeros((0, group.height, group.width, 3), np.uint8)
        )
        return GroupOutput(stack, rows)


REQUEST_MODE = {"mode": "request"}


def make_server(**overrides: Any) -> ModelServer:
    batching = {**REQUEST_MODE, **overrides.pop("batching", {})}
    config = {
        "id": "m",
        "source": "builtin:tiny-sdxl",
        "warmup": False,
        "batching": batching,
        **overrides,
    }
    server = ModelServer(config, engine_factory=FakeEngine)
    server.reconfigure(server.config.batching.model_dump())
    return server


def job(rid: str, *seeds: int, size: int = 16, partials: int = 0) -> GenerationJob:
    return GenerationJob(rid, "p", None, seeds, size, size, 4, 5.0, partial_images=partials)


def engine(server: ModelServer) -> FakeEngine:
    return server._engine  # type: ignore[return-value]


async def wait_entered(fake: FakeEngine) -> None:
    await asyncio.to_thread(fake.entered.wait, 5)
    fake.entered.clear()


def seeds_of(stack: np.ndarray) -> list[int]:
    return [int(img[0, 0, 0]) for img in stack]


async def test_lone_request_runs_at_once() -> None:
    server = make_server()
    out = await asyncio.wait_for(server.generate_pixels(job("a", 1, 2)), 5)
    assert seeds_of(out) == [1, 2]
    assert server.stats()["batch_size_histogram"] == {2: 1}


async def test_requests_queued_during_a_batch_form_the_next_batch() -> None:
    server = make_server()
    fake = engine(server)
    release = fake.pause(0)
    first = asyncio.create_task(server.generate_pixels(job("a", 1)))
    await wait_entered(fake)
    rest = [
        asyncio.create_task(server.generate_pixels(job(f"r{i}", 10 * i, 10 * i + 1)))
        for i in range(1, 8)
    ]
    await asyncio.sleep(0.05)
    assert server.stats()["waiting_requests"] == 7  # held at the gate
    release.set()
    outs = await asyncio.wait_for(asyncio.gather(first, *rest), 10)
    assert server.stats()["waiting_requests"] == 0
    assert seeds_of(outs[0]) == [1]
    for i, out in enumerate(outs[1:], start=1):
        assert seeds_of(out) == [10 * i, 10 * i + 1]
    assert fake.calls[0] == [1]
    assert len(fake.calls) == 2 and len(fake.calls[1]) == 14
    assert server.stats()["batch_size_histogram"] == {1: 1, 14: 1}


async def test_batches_never_exceed_max_batch_size_in_images() -> None:
    server = make_server(max_images_per_request=2, batching={"max_batch_size": 4})
    fake = engine(server)
    release = fake.pause(0)
    first = asyncio.create_task(server.generate_pixels(job("a", 1)))
    await wait_entered(fake)
    rest = [asyncio.create_task(server.generate_pixels(job(f"r{i}", i, i + 100))) for i in range(5)]
    await asyncio.sleep(0.05)
    release.set()
    await asyncio.wait_for(asyncio.gather(first, *rest), 10)
    assert all(len(call) <= 4 for call in fake.calls)
    assert sum(len(call) for call in fake.calls) == 11


async def test_different_shapes_in_one_batch_make_separate_calls() -> None:
    server = make_server()
    fake = engine(server)
    release = fake.pause(0)
    first = asyncio.create_task(server.generate_pixels(job("a", 1)))
    await wait_entered(fake)
    small = asyncio.create_task(server.generate_pixels(job("s", 2, size=16)))
    large = asyncio.create_task(server.generate_pixels(job("l", 3, size=32)))
    await asyncio.sleep(0.05)
    release.set()
    _, out_small, out_large = await asyncio.wait_for(asyncio.gather(first, small, large), 10)
    assert out_small.shape == (1, 16, 16, 3) and out_large.shape == (1, 32, 32, 3)
    stats = server.stats()
    assert stats["batches"] == 2 and stats["pipeline_calls"] == 3


async def test_cancelled_request_never_wedges_the_gate() -> None:
    server = make_server()
    doomed = asyncio.create_task(server.generate_pixels(job("doomed", 1)))
    await asyncio.sleep(0)  # it closes the gate and enters the batch queue
    doomed.cancel()
    with pytest.raises(asyncio.CancelledError):
        await doomed
    out = await asyncio.wait_for(server.generate_pixels(job("next", 5)), 5)
    assert seeds_of(out) == [5]


async def test_engine_error_reaches_the_caller_and_the_server_recovers() -> None:
    server = make_server()
    engine(server).fail_next = True
    with pytest.raises(RuntimeError, match="exploded"):
        await asyncio.wait_for(server.generate_pixels(job("a", 1)), 5)
    out = await asyncio.wait_for(server.generate_pixels(job("b", 2)), 5)
    assert seeds_of(out) == [2]


def test_reconfigure_refuses_batches_smaller_than_a_request() -> None:
    server = make_server()
    with pytest.raises(ValueError, match="max_images_per_request"):
        server.reconfigure({"max_batch_size": 2})


def test_warmup_runs_each_generation_size_once() -> None:
    server = ModelServer(
        {
            "id": "m",
            "source": "builtin:tiny-sdxl",
            "generation_scale": 0.125,
            "batching": REQUEST_MODE,
        },
        engine_factory=FakeEngine,
    )
    sizes = sorted({(len(c),) for c in engine(server).calls})
    assert sizes == [(1,)]
    assert len(engine(server).calls) == 5  # 1024², 1344x768, 768x1344, 1216x832, 832x1216


async def collect(server: ModelServer, j: GenerationJob) -> list[Any]:
    return [event async for event in server._submit(Submission(j, stream=True))]


async def test_stream_sends_partials_in_order_then_the_final() -> None:
    server = make_server()
    events = await asyncio.wait_for(collect(server, job("s", 3, 4, partials=3)), 5)
    kinds = [(e.kind, e.partial_index) for e in events]
    assert kinds == [("partial", 0), ("partial", 1), ("partial", 2), ("final", None)]
    assert [int(img[0, 0, 0]) for img in events[0].pixels] == [3, 4]
    assert seeds_of(events[-1].pixels) == [3, 4]
    assert server.stats()["partial_images_sent"] == 6


async def test_streamed_and_plain_requests_share_a_batch() -> None:
    server = make_server()
    fake = engine(server)
    release = fake.pause(0)
    first = asyncio.create_task(server.generate_pixels(job("a", 1)))
    await wait_entered(fake)
    streamed = asyncio.create_task(collect(server, job("s", 2, partials=2)))
    plain = asyncio.create_task(server.generate_pixels(job("p", 3)))
    await asyncio.sleep(0.05)
    release.set()
    _, events, out = await asyncio.wait_for(asyncio.gather(first, streamed, plain), 10)
    assert [e.kind for e in events] == ["partial", "partial", "final"]
    assert seeds_of(out) == [3]
    assert fake.calls[1] == [2, 3]  # one pipeline call for both
    stats = server.stats()
    assert stats["mixed_batches"] == 1 and stats["streaming_requests"] == 1


async def test_a_stream_nobody_reads_does_not_stall_its_batch() -> None:
    """A slow client's events wait in its own inbox; the batch and its peers go on."""
    server = make_server()
    fake = engine(server)
    release = fake.pause(0)
    first = asyncio.create_task(server.generate_pixels(job("a", 1)))
    await wait_entered(fake)
    slow = server._submit(Submission(job("s", 2, partials=3), stream=True))
    slow_first = asyncio.create_task(anext(slow))  # enters the queue, then is not read
    plain = asyncio.create_task(server.generate_pixels(job("p", 3)))
    await asyncio.sleep(0.05)
    release.set()
    out = await asyncio.wait_for(plain, 10)  # finishes while the stream sits unread
    await first
    assert seeds_of(out) == [3] and fake.calls[1] == [2, 3]
    assert (await slow_first).kind == "partial"
    rest = [event async for event in slow]  # everything it missed is still there
    assert [(e.kind, e.partial_index) for e in rest] == [
        ("partial", 1),
        ("partial", 2),
        ("final", None),
    ]


async def test_cancelled_request_leaves_the_running_call() -> None:
    server = make_server()
    fake = engine(server)
    release = fake.pause(0)
    first = asyncio.create_task(server.generate_pixels(job("a", 1)))
    await wait_entered(fake)
    doomed = asyncio.create_task(server.generate_pixels(job("d", 5, 6)))
    kept = asyncio.create_task(server.generate_pixels(job("k", 7)))
    await asyncio.sleep(0.05)
    resume = fake.pause(1)
    release.set()
    await first
    await wait_entered(fake)  # the second batch [d, k] is inside its first step
    doomed.cancel()
    await asyncio.sleep(0.05)
    resume.set()
    assert seeds_of(await asyncio.wait_for(kept, 5)) == [7]
    stats = server.stats()
    assert stats["cancelled_requests"] == 1
    assert stats["dropped_images"] == 2 and stats["steps_saved"] == 2 * 3
    assert fake.steps_run[-3:] == [1, 1, 1]  # only "k" was denoised after step 1


class PoisonEngine(FakeEngine):
    """Fails any call that contains seed 13: a request that breaks its whole batch."""

    def generate(self, group: GenerationGroup, observer: Any = None) -> GroupOutput:
        if 13 in group.seeds:
            self.calls.append(list(group.seeds))
            raise RuntimeError("bad input in the batch")
        return super().generate(group, observer)


async def test_a_failing_request_fails_alone_and_its_batch_mates_succeed() -> None:
    server = ModelServer(
        {"id": "m", "source": "builtin:tiny-sdxl", "warmup": False, "batching": REQUEST_MODE},
        engine_factory=PoisonEngine,
    )
    fake = engine(server)
    release = fake.pause(0)
    first = asyncio.create_task(server.generate_pixels(job("a", 1)))
    await wait_entered(fake)
    good = asyncio.create_task(server.generate_pixels(job("g", 2, 3)))
    bad = asyncio.create_task(server.generate_pixels(job("b", 13)))
    also_good = asyncio.create_task(server.generate_pixels(job("h", 4)))
    await asyncio.sleep(0.05)
    release.set()
    results = await asyncio.wait_for(
        asyncio.gather(first, good, bad, also_good, return_exceptions=True), 10
    )
    assert seeds_of(results[1]) == [2, 3] and seeds_of(results[3]) == [4]
    assert isinstance(results[2], RuntimeError) and "bad input" in str(results[2])
    stats = server.stats()
    assert stats["split_batches"] == 1 and stats["failed_requests"] == 1
    # The failed call, then one retry per request of that batch.
    assert fake.calls[1:] == [[2, 3, 13, 4], [2, 3], [13], [4]]


class NaNEngine(FakeEngine):
    """Flags the image of seed 99 as non-finite, as the real engine does."""

    def generate(self, group: GenerationGroup, observer: Any = None) -> GroupOutput:
        output = super().generate(group, observer)
        output.invalid_rows = [r for r in output.rows if group.seeds[r] == 99]
        return output


async def test_non_finite_image_fails_its_request_with_a_clear_error() -> None:
    from common.errors import APIError

    server = ModelServer(
        {"id": "m", "source": "builtin:tiny-sdxl", "warmup": False, "batching": REQUEST_MODE},
        engine_factory=NaNEngine,
    )
    with pytest.raises(APIError) as info:
        await asyncio.wait_for(server.generate_pixels(job("n", 98, 99)), 5)
    assert info.value.code == "invalid_output" and info.value.status == 500
    assert seeds_of(await asyncio.wait_for(server.generate_pixels(job("ok", 5)), 5)) == [5]


async def test_a_job_asking_for_progress_gets_every_step_and_no_previews() -> None:
    server = make_server()
    observed = dataclasses.replace(job("p", 5), report_progress=True)
    events = await asyncio.wait_for(collect(server, observed), 5)
    assert [(e.kind, e.step, e.total_steps) for e in events] == [
        ("progress", 1, 4),
        ("progress", 2, 4),
        ("progress", 3, 4),
        ("progress", 4, 4),
        ("final", None, None),
    ]
    plain = await asyncio.wait_for(collect(server, job("q", 6, partials=1)), 5)
    assert "progress" not in [e.kind for e in plain]  # streams that did not ask get none
