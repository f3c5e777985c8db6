"""The step loop on a fake family: joins, leaves, cancel, the row budget, LoRA rows.

No torch and no diffusers: ``tests/support/fake_family.py`` moves one float per row
by a little arithmetic, so every image is a pure function of its request and these
tests check the scheduling itself (who ticks with whom, in which order, what each
request gets back). The loop runs inline on the test's thread.
"""

from __future__ import annotations

import subprocess
import sys
from concurrent.futures import Future
from typing import Any

import numpy as np
import pytest

from common.job import BatchStats, GenerationJob, ImageEvent, LoraRef
from deployments.metrics import ModelMetrics
from deployments.model.scheduler.policy import AdmissionPolicy
from deployments.model.scheduler.runner import StepRunner
from deployments.model.scheduler.step_loop import StepLoop
from deployments.model.scheduler.submission import Submission
from tests.support.fake_family import FakeFamily, expected


class InlineExecutor:
    """Runs the loop on the caller's thread, to the end (a deterministic schedule)."""

    def submit(self, fn: Any, *args: Any) -> Future[Any]:
        future: Future[Any] = Future()
        future.set_result(fn(*args))
        return future


def make_loop(family: FakeFamily, budget: int = 8) -> StepLoop:
    runner = StepRunner(family, family.lora_rows)
    policy = AdmissionPolicy(budget)
    return StepLoop(runner, InlineExecutor(), policy, BatchStats(), ModelMetrics("fake"))  # type: ignore[arg-type]


def job(rid: str, *seeds: int, steps: int = 4, guidance: float = 0.0, **kw: Any) -> GenerationJob:
    size = kw.pop("size", 8)
    return GenerationJob(rid, rid, None, seeds or (1,), size, size, steps, guidance, **kw)


def submission(j: GenerationJob, stream: bool = False) -> tuple[Submission, list[ImageEvent]]:
    events: list[ImageEvent] = []
    sub = Submission(j, stream=stream)
    sub.sink = events.append
    return sub, events


def final(events: list[ImageEvent]) -> np.ndarray:
    kinds = [event.kind for event in events]
    assert kinds[-1] == "final", kinds
    return events[-1].pixels


def values(images: np.ndarray) -> list[int]:
    return [int(image[0, 0, 0]) for image in images]


def test_the_scheduler_imports_no_torch_or_diffusers() -> None:
    code = (
        "import sys, deployments.model.scheduler.step_loop, tests.support.fake_family;"
        "assert not {'torch', 'diffusers'} & set(sys.modules), 'heavy import'"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def test_a_request_joining_mid_flight_gets_what_it_gets_alone() -> None:
    family = FakeFamily()
    loop = make_loop(family)
    late, late_events = submission(job("late", 5, 6, steps=3, guidance=2.0))
    family.before_tick = lambda calls: loop.submit(late) if calls == 2 else None
    early, early_events = submission(job("early", 9, steps=6))
    loop.submit(early)
    assert values(final(early_events)) == [expected(early.job, 0)]
    assert values(final(late_events)) == [expected(late.job, i) for i in range(2)]
    # The late rows joined at the third call and shared the calls after it.
    assert family.calls[:2] == [["early"], ["early"]]
    assert family.calls[3] == ["early", "late", "late"]


def test_a_short_request_leaves_before_a_long_one_ends() -> None:
    family = FakeFamily()
    loop = make_loop(family)
    order: list[str] = []
    long_, _ = submission(job("long", 1, steps=10))
    short, _ = submission(job("short", 2, steps=2))
    long_.sink = lambda e: order.append("long") if e.kind == "final" else None
    short.sink = lambda e: order.append("short") if e.kind == "final" else None
    family.before_tick = lambda calls: loop.submit(short) if calls == 1 else None
    loop.submit(long_)
    assert order == ["short", "long"]
    assert sum("short" in call for call in family.calls) == 2


def test_cancelled_rows_leave_at_the_next_step() -> None:
    family = FakeFamily()
    loop = make_loop(family)
    keep, keep_events = submission(job("keep", 1, steps=6))
    gone, gone_events = submission(job("gone", 2, 3, steps=6))

    def cancel(calls: int) -> None:
        if calls == 2:
            gone.cancelled = True

    family.before_tick = cancel
    loop.submit(gone)
    loop.submit(keep)
    assert values(final(keep_events)) == [expected(keep.job, 0)]
    assert not gone_events  # never answered: its caller went away
    assert all("gone" not in call for call in family.calls[3:])
    assert loop.stats.dropped_images == 2


def test_the_row_budget_admits_in_arrival_order_and_never_overtakes() -> None:
    family = FakeFamily()
    loop = make_loop(family, budget=4)
    first, _ = submission(job("first", 1, 2, 3, steps=4))
    big, big_events = submission(job("big", 4, 5, steps=2))
    small, _ = submission(job("small", 6, steps=2))

    def arrive(calls: int) -> None:
        if calls == 0:
            loop.submit(big)
            loop.submit(small)

    family.before_tick = arrive
    loop.submit(first)
    assert values(final(big_events)) == [expected(big.job, i) for i in range(2)]
    # big (2 rows) waits for first (3 of 4 rows) to end; small never overtakes it.
    assert all(len(call) <= 4 for call in family.calls)
    first_big = next(i for i, call in enumerate(family.calls) if "big" in call)
    first_small = next(i for i, call in enumerate(family.calls) if "small" in call)
    assert first_small >= first_big and "first" not in family.calls[first_big]


def test_each_lora_row_gets_its_adapters_in_batch_entry_order() -> None:
    family = FakeFamily()
    loop = make_loop(family)
    a, b = (LoraRef("a", 0.5),), (LoraRef("b", 1.0),)
    guided, guided_events = submission(job("guided", 1, guidance=3.0, loras=a))
    plain, plain_events = submission(job("plain", 2, loras=b))
    none, _ = submission(job("none", 3))
    family.before_tick = None
    for sub in (guided, plain, none):
        loop._pending.append(sub)  # admitted together at the first boundary
    loop.submit(Submission(job("x", 4, steps=1), stream=False))
    assert family.entries[0][:4] == [a, a, b, ()]  # CFG row: two entries, same adapters
    assert values(final(guided_events)) == [expected(guided.job, 0, a)]
    assert values(final(plain_events)) == [expected(plain.job, 0, b)]


def test_rows_of_different_tick_keys_take_turns() -> None:
    family = FakeFamily()
    loop = make_loop(family)
    big, _ = submission(job("big", 1, steps=3, size=16))
    small, _ = submission(job("small", 2, steps=3, size=8))
    loop._pending.extend([big, small])
    loop.submit(Submission(job("tiny", 3, steps=1, size=8), stream=False))
    assert [call[0] for call in family.calls[:4]] == ["big", "small", "big", "small"]
    assert not any("big" in call and "small" in call for call in family.calls)


def test_a_failing_call_is_retried_per_request_and_fails_only_its_own() -> None:
    family = FakeFamily()
    loop = make_loop(family)
    good, good_events = submission(job("good", 1, steps=3))
    bad, bad_events = submission(job("poison", 2, steps=3))
    broken, broken_events = submission(job("bad-admit", 3, steps=3))
    loop._pending.extend([good, bad, broken])
    loop.submit(Submission(job("x", 4, steps=1), stream=False))
    assert values(final(good_events)) == [expected(good.job, 0)]
    assert [e.kind for e in bad_events] == ["error"] and [e.kind for e in broken_events] == [
        "error"
    ]
    assert loop.step_stats.isolated_ticks >= 1


def test_previews_arrive_at_their_steps_then_the_final() -> None:
    family = FakeFamily()
    loop = make_loop(family)
    sub, events = submission(job("s", 1, steps=6, partial_images=2), stream=True)
    loop.submit(sub)
    assert [e.kind for e in events] == ["partial", "partial", "final"]
    assert [e.partial_index for e in events[:2]] == [0, 1]


@pytest.mark.parametrize("interval", [3])
def test_what_the_family_cannot_do_is_refused_before_admission(interval: int) -> None:
    family = FakeFamily()
    with pytest.raises(Exception, match="no cache"):
        family.check(job("c", 1, cache_interval=interval))
