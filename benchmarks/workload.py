"""Workload files: a weighted mix of request shapes, sampled reproducibly.

A workload is JSON: ``{"requests": [{"weight": 3, "body": {...}}, ...]}``. Each body
is an OpenAI ``images.generate`` body (``prompt`` optional); ``size``, ``n`` and
``num_inference_steps`` are what usually vary.
"""

from __future__ import annotations

import json
import random
from dataclasses import dataclass
from pathlib import Path
from typing import Any


@dataclass(frozen=True)
class Workload:
    bodies: list[dict[str, Any]]
    weights: list[float]
    name: str = "workload"

    @classmethod
    def load(cls, path: Path) -> Workload:
        doc = json.loads(path.read_text())
        entries = doc["requests"]
        if not entries:
            raise ValueError(f"{path}: 'requests' is empty")
        bodies = [{"prompt": "a lighthouse on a cliff", **e["body"]} for e in entries]
        weights = [float(e.get("weight", 1)) for e in entries]
        if any(w <= 0 for w in weights):
            raise ValueError(f"{path}: weights must be positive")
        return cls(bodies, weights, name=path.stem)

    def sampler(self, seed: int = 0) -> random.Random:
        return random.Random(seed)

    def draw(self, rng: random.Random) -> dict[str, Any]:
        return dict(rng.choices(self.bodies, weights=self.weights, k=1)[0])

    def images_per_request(self) -> float:
        total = sum(self.weights)
        return (
            sum(w * b.get("n", 1) for w, b in zip(self.weights, self.bodies, strict=True)) / total
        )
