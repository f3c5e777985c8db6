"""The tiny built-in model's config for engine tests, and a recording step observer."""

from __future__ import annotations

import numpy as np

from common.model_config import ModelConfig

STEPS = 4


def tiny_config(**overrides: object) -> ModelConfig:
    base = {"id": "tiny", "source": "builtin:tiny-sdxl", "torch_threads": 2, "default_steps": STEPS}
    return ModelConfig.model_validate({**base, **overrides})


class Recorder:
    """A step observer that records calls and drops given rows at a given step."""

    def __init__(self, drop_at: int = 0, drop: frozenset[int] = frozenset()) -> None:
        self.drop_at, self.drop = drop_at, drop
        self.calls: list[tuple[int, int, list[int]]] = []
        self.previews: list[np.ndarray] = []

    def __call__(self, step, total, rows, preview):  # type: ignore[no-untyped-def]
        self.calls.append((step, total, rows))
        self.previews.append(preview())
        return set(self.drop) if step == self.drop_at else set()
