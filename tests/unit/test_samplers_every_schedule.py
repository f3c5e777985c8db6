"""Every sampler and every schedule that ``/samplers`` and ``/schedulers`` list runs in the
step loop on the tiny SDXL (the family every configured model belongs to), case-insensitive."""

from __future__ import annotations

import numpy as np
import pytest

from common.errors import APIError
from deployments.model.request_mode.engine import DiffusersEngine
from serve_app.dialects.samplers import (
    SCHEDULE_LABELS,
    resolve_sampler,
    sampler_items,
    scheduler_items,
    spec_labels,
)
from tests.support.engines import tiny_config
from tests.unit.test_step_loop import job, run_alone

# Every sampler once, every schedule on two samplers that take them all (the whole
# cross product runs end to end in tests/integration/test_clients_round2.py).
COMBINATIONS = sorted(
    {(sampler["name"], "Automatic") for sampler in sampler_items()}
    | {
        (name, schedule["label"])
        for name in ("Euler", "DPM++ 2M")
        for schedule in scheduler_items()
    }
    | {("Euler a", "Karras"), ("LCM", "Beta")}  # pairs diffusers lacks: a 400
)


@pytest.fixture(scope="module")
def engine() -> DiffusersEngine:
    return DiffusersEngine(tiny_config())


def test_the_new_names_are_listed() -> None:
    assert "LCM" in [s["name"] for s in sampler_items()]
    assert {"Simple", "Normal", "Beta"} <= set(SCHEDULE_LABELS.values())


@pytest.mark.parametrize(("sampler", "schedule"), COMBINATIONS)
def test_every_listed_pair_runs_or_is_a_400_naming_scheduler(
    engine: DiffusersEngine, sampler: str, schedule: str
) -> None:
    try:
        spec = resolve_sampler(sampler.upper(), schedule.lower())
    except APIError as err:  # a sigma schedule the sampler's diffusers class lacks
        assert (err.status, err.param) == (400, "scheduler")
        return
    images = run_alone(engine.step_runner(), job("s", 3, steps=3, scheduler=spec))
    assert images.shape[0] == 1 and np.isfinite(images.astype(float)).all()
    if spec is not None:
        assert spec_labels(spec)[0].lower() == sampler.lower()
