"""GPU tier: the same engine code on CUDA. Skipped where no CUDA device is visible."""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")


def test_tiny_sdxl_on_cuda_matches_seed_across_batch() -> None:
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
    assert single.shape == (1, 128, 128, 3)
    diff = np.abs(single[0].astype(int) - many[2].astype(int))
    assert diff.max() <= 2
