"""The step loop's priority policy on the fake family: preemption, aging, deadlines and
the latent-pixel budget, with a clock that advances one second per denoiser call.

Each fake image is a pure function of its request (``tests/support/fake_family.py``),
so a paused-and-resumed request must come back with exactly what it gets alone.
"""

from __future__ import annotations

import time
from typing import Any

import pytest

from common.errors import APIError
from common.job import BatchStats, GenerationJob, ImageEvent, Priority
from deployments.metrics import ModelMetrics
from deployments.model.scheduler.policy import AdmissionPolicy, Order
from deployments.model.scheduler.runner import StepRunner
from deployments.model.scheduler.step_loop import StepLoop
from deployments.model.scheduler.submission import Submission
from tests.support.fake_family import FakeFamily, expected
from tests.unit.test_scheduler import InlineExecutor, final, values


class FakeClock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


class Harness:
    """A loop whose clock ticks one second per denoiser call, with arrivals by call number."""

    def __init__(self, budget: int, order: Order = "priority", max_wait: float = 60.0) -> None:
        self.family = FakeFamily()
        self.clock = FakeClock()
        self.policy = AdmissionPolicy(budget, order, max_wait, clock=self.clock)
        runner = StepRunner(self.family, self.family.lora_rows)
        self.loop = StepLoop(runner, InlineExecutor(), self.policy, BatchStats(), ModelMetrics("t"))  # type: ignore[arg-type]
        self.arrivals: dict[int, list[Submission]] = {}
        self.events: dict[str, list[ImageEvent]] = {}
        self.pixels_in_use: list[int] = []  # what the policy counts, at every call
        self.active_rows: list[int] = []  # what stats() reports, during every call
        self.family.before_tick = self._before_tick

    def _before_tick(self, calls: int) -> None:
        self.clock.now += 1.0
        self.active_rows.append(self.loop.active_rows)
        running = self.loop._requests.values()  # noqa: SLF001 - the policy's own view
        self.pixels_in_use.append(sum(a.sub.latent_pixels for a in running if a.parked is None))
        for sub in self.arrivals.pop(calls, []):
            self.loop.submit(sub)

    def request(
        self, rid: str, n: int = 1, steps: int = 4, priority: Priority = "batch", **kw: Any
    ) -> Submission:
        size = kw.pop("size", 8)
        seeds = tuple(range(1, n + 1))
        job = GenerationJob(rid, rid, None, seeds, size, size, steps, 0.0, priority=priority, **kw)
        sub = Submission(job, stream=False)
        self.events[rid] = []
        sub.sink = self.events[rid].append
        return sub

    def at(self, call: int, sub: Submission) -> Submission:
        self.arrivals.setdefault(call, []).append(sub)
        return sub

    def calls_of(self, rid: str) -> list[int]:
        return [i for i, ids in enumerate(self.family.calls) if rid in ids]

    def finished_at(self, rid: str) -> int:
        return self.calls_of(rid)[-1]


def test_an_interactive_request_pauses_the_newest_batch_request_and_both_stay_exact() -> None:
    h = Harness(budget=4)
    old = h.request("old", n=2, steps=6)
    new = h.at(1, h.request("new", n=2, steps=6))
    person = h.at(3, h.request("person", n=2, steps=3, priority="interactive"))
    h.loop.submit(old)
    # The person's rows ran at the next step boundary, in place of the newest batch rows.
    assert h.calls_of("person") == [4, 5, 6]
    assert "new" not in sum(h.family.calls[4:6], [])
    assert "old" in h.family.calls[4]
    # The old job finished at call 5, which made room: the paused rows resumed at once.
    assert h.family.calls[6] == ["person", "person", "new", "new"]
    assert h.finished_at("person") < h.finished_at("new")
    for sub in (old, new, person):
        assert values(final(h.events[sub.job.request_id])) == [
            expected(sub.job, i) for i in range(sub.n)
        ]
    assert new.preemptions == 1 and new.paused_s == 2.0
    assert h.events["new"][-1].paused_ms == 2000.0 and h.events["old"][-1].paused_ms == 0
    stats = h.loop.snapshot()["priority"]
    assert stats["preemptions"] == 1 and stats["resumes"] == 1 and stats["paused_rows"] == 0
    assert stats["latency_ms"]["interactive"]["count"] == 1


def test_fcfs_order_never_pauses() -> None:
    h = Harness(budget=4, order="fcfs")
    h.at(1, h.request("new", n=2, steps=6))
    h.at(3, h.request("person", n=2, steps=3, priority="interactive"))
    h.loop.submit(h.request("old", n=2, steps=6))
    # The person waits for the first rows to finish (call 5); nothing is paused.
    assert h.calls_of("person")[0] == 6
    assert h.loop.snapshot()["priority"]["preemptions"] == 0


def test_preemption_pauses_only_as_much_as_the_latent_pixels_need() -> None:
    h = Harness(budget=6)
    h.at(0, h.request("b", n=2, steps=5))
    h.at(0, h.request("c", n=2, steps=5))
    h.at(1, h.request("person", n=1, steps=2, priority="interactive"))
    h.loop.submit(h.request("a", n=2, steps=5))
    # One latent pixel short: only the newest (c) pauses; a and b keep running.
    assert h.family.calls[1] == ["a", "a", "b", "b", "c", "c"]
    assert h.family.calls[2] == ["a", "a", "b", "b", "person"]
    assert h.loop.snapshot()["priority"]["preemptions"] == 1


def test_a_waiting_batch_request_ages_past_newer_interactive_ones() -> None:
    def order(max_wait: float) -> list[str]:
        h = Harness(budget=2, max_wait=max_wait)
        h.at(0, h.request("job", n=2, steps=2))
        for call in range(0, 12, 2):
            h.at(call, h.request(f"p{call}", n=2, steps=2, priority="interactive"))
        h.loop.submit(h.request("first", n=2, steps=2, priority="interactive"))
        return [ids[0] for ids in h.family.calls[::2]]

    # Without aging the job waits behind every person; aged at 5 s it goes next.
    assert order(max_wait=60.0)[-1] == "job"
    aged = order(max_wait=5.0)
    assert aged.index("job") == 3  # promoted at 5 s: at the boundary after p2


def test_no_starvation_a_promoted_job_runs_within_the_bound_and_is_never_paused() -> None:
    h = Harness(budget=2, max_wait=4.0)
    job = h.at(0, h.request("job", n=2, steps=6))
    for call in range(0, 40):
        h.at(call, h.request(f"p{call}", n=1, steps=3, priority="interactive"))
    h.loop.submit(h.request("first", n=2, steps=3, priority="interactive"))
    runs = h.calls_of("job")
    # Promoted after 4 s of waiting; a person's 3-step request can be in the way.
    assert job.idle_s <= 4.0 + 3.0
    assert runs == list(range(runs[0], runs[0] + 6)), "a promoted job runs without pauses"
    assert job.preemptions == 0


def test_a_request_that_cannot_meet_its_deadline_is_refused_before_any_step() -> None:
    h = Harness(budget=4)
    h.policy.step_clock.per_step_s = 0.5
    sub = h.request("late", steps=10, priority="interactive", deadline_at=time.time() + 3.0)
    h.loop.submit(sub)
    [event] = h.events["late"]
    assert isinstance(event.error, APIError) and event.error.code == "deadline_exceeded"
    assert event.error.status == 504 and "500 ms per step" in event.error.message
    assert h.family.calls == []
    assert h.loop.snapshot()["priority"]["deadline_refusals"] == 1


def test_a_deadline_that_lapses_in_the_queue_is_refused_at_admission_not_run() -> None:
    h = Harness(budget=2)
    h.policy.step_clock.per_step_s = 0.01
    h.at(0, h.request("queued", steps=2, priority="interactive", deadline_at=time.time() + 3))
    h.loop.submit(h.request("long", n=2, steps=6, priority="interactive"))
    assert h.calls_of("queued") == []
    assert h.events["queued"][-1].error.code == "deadline_exceeded"  # type: ignore[union-attr]


def test_the_nearest_deadline_goes_first_within_a_class() -> None:
    h = Harness(budget=2)
    h.policy.step_clock.per_step_s = 0.001
    soon = time.time() + 60
    h.at(0, h.request("relaxed", n=2, steps=2, priority="interactive", deadline_at=soon + 60))
    h.at(0, h.request("urgent", n=2, steps=2, priority="interactive", deadline_at=soon))
    h.loop.submit(h.request("running", n=2, steps=2, priority="interactive"))
    assert h.finished_at("urgent") < h.calls_of("relaxed")[0]


@pytest.mark.parametrize("order", ["priority", "fcfs"])
def test_three_sizes_pack_by_latent_pixels(order: Order) -> None:
    # Latent pixels per image: 8 px -> 1, 16 px -> 4, 32 px -> 16. Budget 16.
    h = Harness(budget=16, order=order)
    h.at(0, h.request("mid", n=2, steps=3, size=16))
    h.at(0, h.request("big", n=1, steps=3, size=32))
    h.at(0, h.request("tiny2", n=4, steps=3, size=8))
    h.loop.submit(h.request("tiny", n=4, steps=3, size=8))
    assert max(h.pixels_in_use) <= 16
    # tiny and mid (6 rows, 12 latent px) share the budget; big (16 px) runs alone, and
    # tiny2, behind it in arrival order, does not overtake it.
    assert h.calls_of("mid")[0] < h.finished_at("tiny")
    assert h.calls_of("big")[0] > max(h.finished_at("tiny"), h.finished_at("mid"))
    assert h.calls_of("tiny2")[0] > h.finished_at("big")
    assert all(len(ids) <= 4 for ids in h.family.calls)
    # stats() counts the rows of the group being ticked too (it is out of the rotation).
    assert all(seen >= len(ids) for seen, ids in zip(h.active_rows, h.family.calls, strict=True))
    assert h.loop.snapshot()["latent_pixel_budget"] == 16
