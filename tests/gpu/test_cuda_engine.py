"""GPU tier: the same family code on CUDA, every family. Skipped without a CUDA device."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")

FAMILIES = [
    ("builtin:tiny-sdxl", {}, 5.0),
    ("builtin:tiny-flux", {"size_multiple": 16}, 3.5),
    ("builtin:tiny-qwen-image", {"size_multiple": 16}, 4.0),
]


def run(runner: Any, job: Any) -> np.ndarray:
    rows = runner.admit(job, None)
    while not all(row.done for row in rows):
        runner.tick([row for row in rows if not row.done])
    return runner.decode(rows)[0]


def test_tiny_sdxl_request_mode_on_cuda_matches_seed_across_batch() -> None:
    from common.job import GenerationJob
    from common.model_config import ModelConfig
    from deployments.model.request_mode.batching import group_jobs
    from deployments.model.request_mode.engine import DiffusersEngine

    config = ModelConfig(id="tiny", source="builtin:tiny-sdxl", device="cuda", default_steps=4)
    engine = DiffusersEngine(config)
    alone = GenerationJob("a", "a cat", None, (7,), 128, 128, 4, 5.0)
    batch = GenerationJob("b", "a cat", None, (5, 6, 7), 128, 128, 4, 5.0)
    [single] = [engine.generate(g) for g in group_jobs([alone])]
    [many] = [engine.generate(g) for g in group_jobs([batch])]
    # A group's output holds the images and the rows they belong to.
    assert single.images.shape == (1, 128, 128, 3) and many.rows == [0, 1, 2]
    diff = np.abs(single.images[0].astype(int) - many.images[2].astype(int))
    assert diff.max() <= 2


@pytest.mark.parametrize(("source", "extra", "guidance"), FAMILIES, ids=lambda v: str(v))
def test_every_family_steps_on_cuda_and_a_seed_is_the_same_in_a_batch(
    source: str, extra: dict[str, Any], guidance: float
) -> None:
    from common.job import GenerationJob
    from common.model_config import ModelConfig
    from deployments.model.families.registry import load_family
    from deployments.model.scheduler.runner import StepRunner

    config = ModelConfig.model_validate(
        {"id": "tiny", "source": source, "device": "cuda", "default_steps": 4, **extra}
    )
    runner = StepRunner(load_family(config))
    alone = run(runner, GenerationJob("a", "a cat", None, (7,), 128, 128, 4, guidance))
    batch = run(runner, GenerationJob("b", "a cat", None, (5, 6, 7), 128, 128, 4, guidance))
    assert alone.shape == (1, 128, 128, 3) and batch.shape == (3, 128, 128, 3)
    assert np.abs(alone[0].astype(float) - batch[2].astype(float)).mean() <= 1.0
