"""The ceiling: the raw diffusers pipeline called in-process at fixed batch sizes.

It loads the model through the server's own loading code (same weights, scheduler,
dtype, threads), then times ``pipe(...)`` directly, output as numpy like the server's.
"""

from __future__ import annotations

import time
from typing import Any

from common.model_config import ModelConfig


def measure(
    model: dict[str, Any], body: dict[str, Any], batch_sizes: list[int], min_time_s: float = 3.0
) -> list[dict[str, float]]:
    """images/s and per-call latency at each batch size (warm-up call excluded)."""
    import torch

    from deployments.model.engine import DiffusersEngine

    config = ModelConfig.model_validate({**model, "warmup": False})
    engine = DiffusersEngine(config)
    width, height = config.generation_size(body.get("size", "auto"))
    steps = body.get("num_inference_steps", config.default_steps)
    guidance = body.get("guidance_scale", config.default_guidance)
    rows = []
    for batch in batch_sizes:

        def call(batch: int = batch) -> None:
            generators = [torch.Generator("cpu").manual_seed(i) for i in range(batch)]
            with torch.inference_mode():
                engine.pipe(
                    prompt=[body.get("prompt", "a lighthouse")] * batch,
                    width=width,
                    height=height,
                    num_inference_steps=steps,
                    guidance_scale=guidance,
                    generator=generators,
                    output_type="np",
                )

        call()  # warm-up
        calls = 0
        start = time.perf_counter()
        while calls < 2 or time.perf_counter() - start < min_time_s:
            call()
            calls += 1
        elapsed = time.perf_counter() - start
        rows.append(
            {
                "batch_size": batch,
                "calls": calls,
                "images_per_s": batch * calls / elapsed,
                "latency_ms": elapsed / calls * 1000,
            }
        )
    return rows
