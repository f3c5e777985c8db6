"""The vectorised Euler step equals each row's own ``scheduler.step``; previews cost
nothing when nobody streams.

The schedulers are diffusers' own, set up as the families set up a row's; rows start
at different steps (as rows joining mid-flight do), so one vectorised update mixes
sigmas from different points of different schedules. The family-level tests run the
tiny built-in models both ways and compare the decoded images.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Any

import numpy as np
import pytest
import torch

from common.job import GenerationJob
from deployments.model.families.base import Row, step_each
from deployments.model.families.batched_step import batched_kind, step_rows
from deployments.model.scheduler.runner import StepRunner
from tests.support.fake_family import FakeFamily
from tests.unit.test_scheduler import job, make_loop, submission


@dataclass(eq=False, kw_only=True)
class LatentRow(Row):
    scheduler: Any
    timesteps: Any
    latents: torch.Tensor

    @property
    def tick_key(self) -> tuple[int, ...]:
        return tuple(self.latents.shape)


def euler(prediction_type: str) -> Any:
    from diffusers import EulerDiscreteScheduler

    return EulerDiscreteScheduler(
        beta_start=0.00085,
        beta_end=0.012,
        beta_schedule="scaled_linear",
        steps_offset=1,
        timestep_spacing="leading",
        prediction_type=prediction_type,
    )


def flow() -> Any:
    from diffusers import FlowMatchEulerDiscreteScheduler

    return FlowMatchEulerDiscreteScheduler(use_dynamic_shifting=True)


def rows_for(base: Any, steps: list[int], shape: tuple[int, ...]) -> list[LatentRow]:
    rows = []
    for index, count in enumerate(steps):
        scheduler = copy.deepcopy(base)
        if type(base).__name__ == "FlowMatchEulerDiscreteScheduler":
            sigmas = np.linspace(1.0, 1 / count, count)
            scheduler.set_timesteps(count, sigmas=sigmas, mu=0.8)
        else:
            scheduler.set_timesteps(count)
        scheduler.set_begin_index(0)
        generator = torch.Generator().manual_seed(index)
        noise_sigma = getattr(scheduler, "init_noise_sigma", 1.0)
        latents = torch.randn((1, *shape), generator=generator) * noise_sigma
        rows.append(
            LatentRow(
                owner=None,
                index=index,
                total=len(scheduler.timesteps),
                scheduler=scheduler,
                timesteps=scheduler.timesteps,
                latents=latents,
            )
        )
    return rows


def step_one(row: Row, prediction: Any) -> None:
    """The per-row path, as the families take it."""
    assert isinstance(row, LatentRow)
    t = row.timesteps[row.position]
    row.latents = row.scheduler.step(prediction, t, row.latents, return_dict=False)[0]
    row.position += 1


def fake_prediction(row: LatentRow) -> torch.Tensor:
    return torch.sin(row.latents * 3 + row.position) * 0.5


@pytest.mark.parametrize(
    ("scheduler", "kind"),
    [(euler("epsilon"), "euler-epsilon"), (euler("v_prediction"), "euler-v_prediction"),
     (flow(), "flow")],
)  # fmt: skip
def test_vectorised_steps_equal_each_rows_own_step(scheduler: Any, kind: str) -> None:
    shape = (4, 8, 8)
    together = rows_for(scheduler, [20, 12, 20, 7], shape)
    apart = rows_for(scheduler, [20, 12, 20, 7], shape)
    assert {batched_kind(row) for row in together} == {kind}
    # Stagger the starts: rows 1 and 3 join two steps late.
    for tick in range(22):
        live = [r for i, r in enumerate(together) if not r.done and (tick >= 2 or i in (0, 2))]
        mates = [r for i, r in enumerate(apart) if not r.done and (tick >= 2 or i in (0, 2))]
        if not live:
            break
        predictions = [fake_prediction(row) for row in live]
        assert step_rows(live, predictions, step_one) == [None] * len(live)
        for row, prediction in zip(mates, predictions, strict=True):
            step_one(row, prediction)
    for a, b in zip(together, apart, strict=True):
        assert a.done and b.done
        assert a.scheduler.step_index == b.scheduler.step_index
        torch.testing.assert_close(a.latents, b.latents, rtol=0, atol=1e-6)


def test_other_samplers_and_a_failing_row_step_on_their_own() -> None:
    from diffusers import EulerAncestralDiscreteScheduler

    shape = (4, 8, 8)
    plain = rows_for(euler("epsilon"), [10, 10], shape)
    ancestral = rows_for(EulerAncestralDiscreteScheduler(), [10], shape)
    assert batched_kind(ancestral[0]) is None
    rows = [plain[0], ancestral[0], plain[1]]
    predictions = [fake_prediction(row) for row in rows]
    predictions[2] = torch.zeros(1, 3, 8, 8)  # wrong shape: this row's step must fail
    errors = step_rows(rows, predictions, step_one)
    assert errors[0] is None and errors[1] is None and isinstance(errors[2], Exception)
    assert [row.position for row in rows] == [1, 1, 0]


def run_images(family: Any, vectorised: bool, guidance: float) -> np.ndarray:
    """Three staggered requests through the step runner; their decoded images."""
    runner = StepRunner(family)
    if not vectorised:
        # Row by row, each with its own scheduler: what step_batch does for other samplers.
        family.step_batch = lambda rows, predictions: step_each(family, rows, predictions)
    jobs = [
        GenerationJob(f"r{i}", "a lighthouse", None, (i, i + 7), 64, 64, steps, guidance)
        for i, steps in enumerate((8, 6, 8))
    ]
    active: list[Any] = []
    finished: list[Any] = []
    for tick in range(40):
        if tick < len(jobs):
            active += runner.admit(jobs[tick], tick)  # owner: the job's number
        if not active:
            break
        assert runner.tick(active) == [None] * len(active)
        finished += [row for row in active if row.done]
        active = [row for row in active if not row.done]
    finished.sort(key=lambda row: (row.owner, row.index))
    return np.concatenate([runner.decode([row])[0] for row in finished])


@pytest.mark.parametrize(("model", "guidance"), [("tiny-sdxl", 5.0), ("tiny-flux", 3.5)])
def test_a_family_gives_the_same_images_with_the_vectorised_step(
    model: str, guidance: float
) -> None:
    from deployments.model.families.registry import load_family
    from tests.support.engines import tiny_config

    config = tiny_config(source=f"builtin:{model}", generation_scale=1.0)
    together = run_images(load_family(config), True, guidance)
    apart = run_images(load_family(config), False, guidance)
    assert together.shape == apart.shape == (6, 64, 64, 3)
    mean_diff = np.abs(together.astype(np.int16) - apart.astype(np.int16)).mean()
    assert mean_diff <= 1.0, mean_diff  # within 1/255 on average


def test_nobody_streaming_means_no_preview_work() -> None:
    family = FakeFamily()
    previews: list[int] = []
    real_preview = family.preview
    family.preview = lambda rows: previews.append(len(rows)) or real_preview(rows)  # type: ignore[method-assign]
    loop = make_loop(family)
    for name, stream in (("plain", False), ("streamed-no-partials", True)):
        sub, events = submission(job(name, 1, 2, steps=6), stream=stream)
        loop.submit(sub)
        assert [e.kind for e in events] == ["final"]
    assert previews == []
    sub, events = submission(job("wants", 1, steps=6, partial_images=2), stream=True)
    loop.submit(sub)
    assert previews == [1, 1]  # the one streamed request's two previews, nothing else
