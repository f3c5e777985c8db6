"""Who runs next: the step scheduler's admission policy, free of rows and tensors.

At every step boundary the loop asks :meth:`AdmissionPolicy.plan` what to do with the
requests that are not running (waiting ones and paused ones) given the ones that are.
The answer is a :class:`Plan`: requests to admit or resume, running requests to pause,
and waiting requests to refuse because they cannot meet their deadline.

Rules (docs/scheduler.md#priority):

- **Budget.** Everything being denoised at once costs ``rows x latent h x latent w``
  and must fit ``budget`` latent pixels. A request that alone exceeds it runs alone.
- **Order.** ``priority``: interactive before batch; a batch request that has waited
  ``max_batch_wait_s`` (queued plus paused) is *promoted*: ahead of every class, and
  never paused again. Within a rank, the earliest deadline first, then arrival.
  ``fcfs``: arrival order only. The first candidate that does not fit stops admission,
  so nobody behind it overtakes it (a large request cannot starve).
- **Preemption.** When an interactive (or promoted) candidate does not fit, running
  batch requests are paused, most recently arrived first, until it fits. Pausing is
  whole requests at step boundaries; a paused request keeps its rows (latents,
  scheduler state, pinned LoRA) and resumes where it stopped.
- **Deadlines.** A waiting request that cannot finish before its deadline at the
  current per-step time (:class:`StepClock`) is refused before it uses the GPU.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Literal, Protocol

from common.errors import APIError
from common.model_config import ModelConfig

Order = Literal["priority", "fcfs"]
PROMOTED, INTERACTIVE, BATCH = 0, 1, 2


class Candidate(Protocol):
    """What the policy reads of a request (a :class:`Submission`)."""

    @property
    def priority(self) -> str: ...
    @property
    def latent_pixels(self) -> int: ...
    @property
    def arrived(self) -> float: ...
    @property
    def deadline(self) -> float | None: ...
    @property
    def steps_left(self) -> int: ...
    def waited(self, now: float) -> float: ...


@dataclass
class Plan:
    """One boundary's decisions, applied by the loop in this order: refuse, pause, start."""

    start: list[Candidate] = field(default_factory=list)  # admit if waiting, resume if paused
    pause: list[Candidate] = field(default_factory=list)
    refuse: list[tuple[Candidate, APIError]] = field(default_factory=list)


class StepClock:
    """The current time per denoising step of a row: an exponential moving average of the
    time between two ticks of the same group (which includes the other groups' ticks
    in between, as a row experiences it)."""

    def __init__(self, weight: float = 0.3) -> None:
        self.weight = weight
        self.per_step_s: float | None = None

    def observe(self, seconds: float) -> None:
        if seconds <= 0:
            return
        old = self.per_step_s
        self.per_step_s = seconds if old is None else old + self.weight * (seconds - old)


class AdmissionPolicy:
    """Plans admission, preemption and deadline refusals (pure: no rows, no threads)."""

    def __init__(
        self,
        budget: int,
        order: Order = "priority",
        max_batch_wait_s: float = 60.0,
        clock: Callable[[], float] | None = None,
    ) -> None:
        self.budget = budget
        self.order = order
        self.max_batch_wait_s = max_batch_wait_s
        self.now: Callable[[], float] = clock or time.perf_counter
        self.step_clock = StepClock()

    @classmethod
    def from_config(cls, config: ModelConfig) -> AdmissionPolicy:
        policy = cls(1)
        policy.configure(config)
        return policy

    def configure(self, config: ModelConfig) -> None:
        """Take the model's ``batching`` settings (at start, and live on reconfigure)."""
        self.budget = config.latent_pixel_budget()
        self.order = config.batching.order
        self.max_batch_wait_s = config.batching.max_batch_wait_s

    def rank(self, sub: Candidate, now: float) -> int:
        if self.order == "fcfs" or sub.priority == "interactive":
            return INTERACTIVE
        return PROMOTED if sub.waited(now) >= self.max_batch_wait_s else BATCH

    def sort_key(self, sub: Candidate, now: float) -> tuple[int, float, float]:
        if self.order == "fcfs":
            return (INTERACTIVE, 0.0, sub.arrived)
        deadline = math.inf if sub.deadline is None else sub.deadline
        return (self.rank(sub, now), deadline, sub.arrived)

    def late(self, sub: Candidate, now: float) -> APIError | None:
        """The refusal for a request that cannot finish before its deadline, if it cannot."""
        per_step = self.step_clock.per_step_s
        if sub.deadline is None:
            return None
        left = sub.deadline - now
        needed = sub.steps_left * (per_step or 0.0)
        if left > 0 and needed <= left:
            return None
        at = "unknown" if per_step is None else f"{per_step * 1000:.0f} ms"
        return APIError(
            "timeout",
            f"The request cannot finish before its deadline: {sub.steps_left} steps at the "
            f"current {at} per step need {needed:.2f} s and {max(left, 0.0):.2f} s are "
            "left. Send fewer steps or a longer X-Request-Timeout.",
            code="deadline_exceeded",
        )

    def plan(
        self,
        waiting: Sequence[Candidate],
        paused: Sequence[Candidate],
        running: Sequence[Candidate],
    ) -> Plan:
        """What to do at this step boundary. ``running`` holds the requests with rows in
        the batch (their ``latent_pixels`` count against the budget)."""
        now = self.now()
        plan = Plan()
        candidates = list(paused)  # a paused request has used the GPU: it finishes
        for sub in waiting:
            refusal = self.late(sub, now)
            if refusal is None:
                candidates.append(sub)
            else:
                plan.refuse.append((sub, refusal))
        used = sum(sub.latent_pixels for sub in running)
        victims = sorted(
            (sub for sub in running if self._pausable(sub, now)),
            key=lambda sub: sub.arrived,
        )
        for sub in sorted(candidates, key=lambda s: self.sort_key(s, now)):
            if used == 0 or used + sub.latent_pixels <= self.budget:
                plan.start.append(sub)
                used += sub.latent_pixels
                continue
            freed = self._make_room(sub, victims, used, now)
            if freed is None:
                break  # the head waits; nobody behind it overtakes it
            plan.pause.extend(freed)
            used += sub.latent_pixels - sum(victim.latent_pixels for victim in freed)
            plan.start.append(sub)
        return plan

    def _pausable(self, sub: Candidate, now: float) -> bool:
        return self.order == "priority" and self.rank(sub, now) == BATCH

    def _make_room(
        self, sub: Candidate, victims: list[Candidate], used: int, now: float
    ) -> list[Candidate] | None:
        """Running batch requests to pause, newest first, so that ``sub`` fits; None
        when ``sub`` may not preempt or pausing every one of them would not do."""
        if self.order != "priority" or self.rank(sub, now) == BATCH:
            return None
        chosen: list[Candidate] = []
        left = used
        for victim in reversed(victims):
            if left + sub.latent_pixels <= self.budget:
                break
            chosen.append(victim)
            left -= victim.latent_pixels
        if left > 0 and left + sub.latent_pixels > self.budget:
            return None
        for victim in chosen:
            victims.remove(victim)
        return chosen
