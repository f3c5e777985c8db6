"""Requests admitted in one round share one prompt-encoding call, and get what they get alone.

``StepRunner.admit_many`` hands the family every request of an admission round; the
SDXL and FLUX families encode their prompts in one ``encode_prompt`` call (SDXL per
CFG / negative-prompt group). The images must match admitting each request alone
within 1/255 on average, and a request the family refuses fails alone.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from common.job import GenerationJob, SchedulerSpec
from deployments.model.scheduler.runner import StepRunner
from tests.support.engines import tiny_config


def jobs(guidance: float) -> list[GenerationJob]:
    return [
        GenerationJob("a", "a lighthouse", None, (1, 2), 64, 64, 6, guidance),
        GenerationJob("b", "a red barn at dusk", None, (3,), 64, 64, 6, guidance),
        GenerationJob("c", "a lighthouse", "fog", (4,), 64, 64, 6, guidance),
        GenerationJob("d", "a cat", None, (5,), 64, 64, 6, 1.0),  # no CFG: its own group
    ]


def images(runner: StepRunner, admitted: list[list[Any]]) -> np.ndarray:
    rows = [row for group in admitted for row in group]
    while not all(row.done for row in rows):
        assert runner.tick(rows) == [None] * len(rows)
    return np.concatenate([runner.decode([row])[0] for row in rows])


@pytest.mark.parametrize(("model", "guidance"), [("tiny-sdxl", 5.0), ("tiny-flux", 3.5)])
def test_one_encoding_call_gives_the_images_of_one_call_each(model: str, guidance: float) -> None:
    from deployments.model.families.registry import load_family

    family = load_family(tiny_config(source=f"builtin:{model}", generation_scale=1.0))
    runner = StepRunner(family)
    requests = [(job, job.request_id) for job in jobs(guidance)]
    calls: list[int] = []
    encode = family.pipe.encode_prompt

    def counting(*args: Any, **kwargs: Any) -> Any:
        prompt = kwargs["prompt"]
        calls.append(len(prompt) if isinstance(prompt, list) else 1)
        return encode(*args, **kwargs)

    family.pipe.encode_prompt = counting
    together = runner.admit_many(requests)
    assert all(isinstance(rows, list) for rows in together)
    assert len(calls) < len(requests) and sum(calls) == len(requests)
    alone = [runner.admit(job, owner) for job, owner in requests]
    a, b = images(runner, together), images(runner, alone)  # type: ignore[arg-type]
    assert a.shape == b.shape == (5, 64, 64, 3)
    assert np.abs(a.astype(np.int16) - b.astype(np.int16)).mean() <= 1.0


def test_a_request_the_family_refuses_fails_alone() -> None:
    from deployments.model.families.registry import load_family

    family = load_family(tiny_config(generation_scale=1.0))
    runner = StepRunner(family)
    good = jobs(5.0)[:2]
    bad = GenerationJob(
        "bad", "x", None, (9,), 64, 64, 6, 5.0, scheduler=SchedulerSpec("NoSuchScheduler")
    )
    out = runner.admit_many([(good[0], 0), (bad, 1), (good[1], 2)])
    assert isinstance(out[0], list) and isinstance(out[2], list)
    assert isinstance(out[1], ValueError)
