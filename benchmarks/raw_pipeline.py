"""The ceiling: the raw diffusers pipeline called in-process at fixed batch sizes.

It loads the model through the server's own loading code (its family: same weights,
scheduler, dtype, threads), then times the family's diffusers pipeline ``pipe(...)``
directly, output as numpy like the server's. Any configured model (``--model``).
:func:`measure_step_loop` times the step scheduler's own primitives the same way,
in-process, so a served gap can be split into the loop's cost and the serving's.
"""

from __future__ import annotations

import time
from typing import Any

from common.model_config import ModelConfig


def _family(model: dict[str, Any]) -> tuple[Any, ModelConfig]:
    from deployments.model.families.registry import load_family

    config = ModelConfig.model_validate({**model, "warmup": False})
    return load_family(config), config


def guidance_kwargs(family: Any, guidance: float) -> dict[str, Any]:
    """How each family's own pipeline takes the guidance the server gives its rows."""
    if family.name == "qwen_image":  # true CFG, with an empty negative prompt above 1
        return {"true_cfg_scale": guidance, "negative_prompt": "" if guidance > 1 else None}
    if family.name == "flux":
        return {"guidance_scale": guidance, "max_sequence_length": family.max_sequence_length}
    return {"guidance_scale": guidance}


def measure(
    model: dict[str, Any],
    body: dict[str, Any],
    batch_sizes: list[int],
    min_time_s: float = 3.0,
    size: tuple[int, int] | None = None,
) -> list[dict[str, float]]:
    """images/s and per-call latency at each batch size (warm-up call excluded).

    ``size``: the (width, height) to generate at, instead of the body's size bucket."""
    import torch

    family, config = _family(model)
    width, height = size or config.generation_size(body.get("size", "auto"))
    steps = body.get("num_inference_steps", config.default_steps)
    guidance = body.get("guidance_scale", config.default_guidance)
    extra = guidance_kwargs(family, guidance)
    rows = []
    for batch in batch_sizes:

        def call(batch: int = batch) -> None:
            generators = [torch.Generator("cpu").manual_seed(i) for i in range(batch)]
            with torch.inference_mode():
                family.pipe(
                    prompt=[body.get("prompt", "a lighthouse")] * batch,
                    width=width,
                    height=height,
                    num_inference_steps=steps,
                    generator=generators,
                    output_type="np",
                    **extra,
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


def measure_step_loop(
    model: dict[str, Any], body: dict[str, Any], rows: int, min_time_s: float = 6.0
) -> dict[str, float]:
    """The step scheduler's primitives in-process, ``rows`` images always in flight.

    Rows start staggered (one admitted per tick until ``rows`` are active) and a
    finished row is replaced at the next tick, as in a closed loop with no HTTP, so
    the UNet calls mix timestep positions as they do when served. The ramp-up and one
    full schedule after it are not counted. Same body as :func:`measure` (one step
    count), so images/s compare directly with the raw best batch.
    """
    import itertools

    from common.job import GenerationJob
    from deployments.model.scheduler.runner import StepRunner

    family, config = _family(model)
    runner = StepRunner(family)
    width, height = config.generation_size(body.get("size", "auto"))
    steps = body.get("num_inference_steps", config.default_steps)
    seeds = itertools.count()

    def admit() -> list[Any]:
        job = GenerationJob(
            request_id="loop",
            prompt=body.get("prompt", "a lighthouse"),
            negative_prompt=None,
            seeds=(next(seeds),),
            gen_width=width,
            gen_height=height,
            steps=steps,
            guidance=body.get("guidance_scale", config.default_guidance),
        )
        return runner.admit(job, None)

    active: list[Any] = []

    def tick() -> int:
        nonlocal active
        if len(active) < rows:
            active += admit()
        runner.tick(active)
        finished = [row for row in active if row.done]
        if finished:
            runner.decode(finished)
            active = [row for row in active if not row.done]
        return len(finished)

    for _ in range(rows + steps):  # ramp-up, then one whole schedule: not counted
        tick()
    done, ticks, started = 0, 0, time.perf_counter()
    while time.perf_counter() - started < min_time_s:
        done += tick()
        ticks += 1
    elapsed = time.perf_counter() - started
    return {"rows": rows, "images": done, "images_per_s": done / elapsed, "ticks": ticks}


def main() -> None:
    """Raw pipeline and in-process step loop side by side, one process, one model."""
    import argparse
    import json
    import os
    from pathlib import Path

    from benchmarks.server import ROOT, model_config

    parser = argparse.ArgumentParser(description=main.__doc__)
    parser.add_argument("--config", type=Path, default=ROOT / "serve_config.yaml")
    parser.add_argument("--model", default=None, help="model id or alias (default: the first)")
    parser.add_argument("--size", default="1024x1024")
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--batch-sizes", default="1,8,16")
    parser.add_argument("--rounds", type=int, default=2, help="raw and loop, interleaved")
    parser.add_argument("--out", type=Path, default=None, help="JSON file to write")
    args = parser.parse_args()
    model = model_config(args.config, args.model)
    body = {"size": args.size, "num_inference_steps": args.steps}
    sizes = [int(x) for x in args.batch_sizes.split(",")]
    result: dict[str, Any] = {"loadavg_before": os.getloadavg()[0], "rounds": []}
    for _ in range(args.rounds):
        raw = measure(model, body, sizes)
        loop = measure_step_loop(model, body, rows=max(sizes), min_time_s=8.0)
        best = max(r["images_per_s"] for r in raw)
        entry = {
            "model": model["id"],
            "raw": raw,
            "loop": loop,
            "loop_over_raw_best": loop["images_per_s"] / best,
        }
        print(json.dumps(entry))
        result["rounds"].append(entry)
    if args.out is not None:
        config = {key: str(value) for key, value in vars(args).items()}
        args.out.write_text(json.dumps({"config": config, **result}, indent=1))


if __name__ == "__main__":
    main()
