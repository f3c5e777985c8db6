"""The step loop's own Python per tick, next to the denoiser call it wraps.

Runs the step runner in-process on a built-in tiny model with ``--rows`` images in
flight (a finished row is replaced by a new one, so timestep positions mix as when
served) and times, per tick:

- ``forward``: the denoiser's own call (UNet or transformer ``forward``): torch;
- ``stacking``: the rest of ``predict`` (selecting each row's timestep, scaling its
  input, concatenating latents and conditioning, guidance, splitting the output);
- ``scheduler``: the rows' scheduler steps (``StepRunner.tick`` after ``predict``);
- ``preview``: one latent-RGB preview of every row (paid only by streamed requests);
- ``bookkeeping``: ``stacking + scheduler``, the non-torch share of a tick.

Admission and decodes are outside the tick; they are timed apart, per image, at the
batch sizes a tick could give them: ``decode_ms_per_image`` (one VAE call over k rows)
and ``encode_ms_per_prompt`` (the family pipeline's ``encode_prompt`` over k prompts),
which says what batching decodes or prompt encodings across requests would save.
Tick figures are medians over ticks, in microseconds.

    python -m benchmarks.step_overhead --model tiny-sdxl --rows 1,8,16 --out FILE.json
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import statistics
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from benchmarks.server import ROOT, model_config
from common.job import GenerationJob
from common.model_config import ModelConfig


class Timer:
    """Wraps a callable and adds its wall time to ``self.total`` (seconds)."""

    def __init__(self, fn: Callable[..., Any]) -> None:
        self.fn, self.total = fn, 0.0

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        started = time.perf_counter()
        try:
            return self.fn(*args, **kwargs)
        finally:
            self.total += time.perf_counter() - started


def measure(model: dict[str, Any], rows: int, size: int, steps: int, ticks: int) -> dict[str, Any]:
    from deployments.model.families.registry import load_family
    from deployments.model.scheduler.runner import StepRunner

    config = ModelConfig.model_validate({**model, "generation_scale": 1.0, "warmup": False})
    family: Any = load_family(config)
    denoiser = family.denoiser
    forward = Timer(denoiser.forward)
    denoiser.forward = forward  # instance attribute: module __call__ finds it
    predict = Timer(family.predict)
    family.predict = predict
    runner = StepRunner(family)
    seeds = itertools.count()

    def admit() -> list[Any]:
        job = GenerationJob(
            request_id="overhead",
            prompt="a lighthouse",
            negative_prompt=None,
            seeds=(next(seeds),),
            gen_width=size,
            gen_height=size,
            steps=steps,
            guidance=config.default_guidance,
        )
        return runner.admit(job, None)

    active: list[Any] = []
    for _ in range(rows):  # staggered start: one row per tick
        active += admit()
        runner.tick(active)
    samples: dict[str, list[float]] = {k: [] for k in ("tick", "forward", "stacking", "scheduler")}
    previews: list[float] = []
    for _ in range(ticks):
        active = [row for row in active if not row.done]
        while len(active) < rows:
            active += admit()
        forward.total = predict.total = 0.0
        started = time.perf_counter()
        runner.tick(active)
        tick = time.perf_counter() - started
        samples["tick"].append(tick)
        samples["forward"].append(forward.total)
        samples["stacking"].append(predict.total - forward.total)
        samples["scheduler"].append(tick - predict.total)
        started = time.perf_counter()
        runner.preview(active)
        previews.append(time.perf_counter() - started)
    out = {k: statistics.median(v) * 1e6 for k, v in samples.items()}
    out["preview"] = statistics.median(previews) * 1e6
    out["bookkeeping"] = out["stacking"] + out["scheduler"]
    decode = {k: _per_item(lambda k=k: runner.decode(active[:k]), k) for k in (1, rows)}
    encode = {k: _per_item(lambda k=k: _encode(family, k), k) for k in (1, rows)}
    return {
        "rows": rows,
        "ticks": ticks,
        "us": out,
        "decode_ms_per_image": decode,
        "encode_ms_per_prompt": encode,
    }


def step_paths(model: dict[str, Any], rows: int, size: int, ticks: int) -> dict[str, float]:
    """The rows' scheduler steps alone, per row (``family.step`` each, the old path) vs
    one ``family.step_batch``, alternating tick by tick on the same rows: median µs.

    No denoiser call: the predictions are random tensors of the latents' shape, so the
    figure is the stepping's own cost, and alternating cancels the machine's drift.
    """
    import torch

    from deployments.model.families.registry import load_family

    config = ModelConfig.model_validate({**model, "generation_scale": 1.0, "warmup": False})
    family: Any = load_family(config)
    active: list[Any] = []
    for seed in range(rows):
        job = GenerationJob("steps", "a", None, (seed,), size, size, 2 * ticks + 2, 1.0)
        active += family.admit(job, None)
    for row in active:  # as predict() does before every step (Euler warns otherwise)
        if hasattr(row.scheduler, "scale_model_input"):
            row.scheduler.scale_model_input(row.latents, row.timesteps[0])
    times: dict[str, list[float]] = {"per_row": [], "vectorised": []}
    for tick in range(2 * ticks):
        predictions = [torch.randn_like(row.latents) * 0.1 for row in active]
        started = time.perf_counter()
        if tick % 2:
            family.step_batch(active, predictions)
        else:
            for row, prediction in zip(active, predictions, strict=True):
                family.step(row, prediction)
        times["vectorised" if tick % 2 else "per_row"].append(time.perf_counter() - started)
    return {k: statistics.median(v) * 1e6 for k, v in times.items()}


def _per_item(call: Callable[[], Any], items: int, repeats: int = 5) -> float:
    """Median ms of ``call`` divided by the ``items`` it handles."""
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        call()
        times.append(time.perf_counter() - started)
    return statistics.median(times) * 1000 / items


def _encode(family: Any, batch: int) -> None:
    """The family pipeline's own ``encode_prompt`` over ``batch`` prompts, as admission
    calls it for one request (which is a batch of 1)."""
    import torch

    prompts = [f"a lighthouse {i}" for i in range(batch)]
    with torch.inference_mode():
        if family.name == "sdxl":
            family.pipe.encode_prompt(
                prompt=prompts, device=family.device, do_classifier_free_guidance=True
            )
        elif family.name == "flux":
            family.pipe.encode_prompt(
                prompt=prompts,
                prompt_2=None,
                device=family.device,
                max_sequence_length=family.max_sequence_length,
            )
        else:
            family.pipe.encode_prompt(prompt=prompts, device=family.device)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--config", type=Path, default=ROOT / "serve_config.yaml")
    parser.add_argument("--model", default="tiny-sdxl")
    parser.add_argument("--rows", default="1,8,16")
    parser.add_argument("--size", type=int, default=64, help="generation side, px")
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--ticks", type=int, default=60)
    parser.add_argument("--out", type=Path, default=None)
    parser.add_argument(
        "--steps-only", action="store_true", help="only the scheduler steps: per row vs vectorised"
    )
    args = parser.parse_args()
    model = model_config(args.config, args.model)
    if args.steps_only:
        result = {"loadavg_before": os.getloadavg()[0], "model": model["id"], "steps": {}}
        print("rows | per-row steps µs | vectorised µs | ratio")
        for rows in (int(x) for x in args.rows.split(",")):
            paths = step_paths(model, rows, args.size, args.ticks)
            result["steps"][rows] = paths
            ratio = paths["per_row"] / paths["vectorised"]
            print(f"{rows} | {paths['per_row']:.0f} | {paths['vectorised']:.0f} | {ratio:.1f}x")
        if args.out is not None:
            args.out.write_text(json.dumps(result, indent=1))
        return
    result = {"loadavg_before": os.getloadavg()[0], "model": model["id"], "levels": []}
    print(
        "rows | tick | forward | stacking | scheduler | bookkeeping | preview  (µs, median)"
        " | decode ms/image at 1, rows | encode ms/prompt at 1, rows"
    )
    for rows in (int(x) for x in args.rows.split(",")):
        level = measure(model, rows, args.size, args.steps, args.ticks)
        us = level["us"]
        print(
            f"{rows} | {us['tick']:.0f} | {us['forward']:.0f} | {us['stacking']:.0f} | "
            f"{us['scheduler']:.0f} | {us['bookkeeping']:.0f} | {us['preview']:.0f} | "
            + " / ".join(f"{v:.1f}" for v in level["decode_ms_per_image"].values())
            + " | "
            + " / ".join(f"{v:.1f}" for v in level["encode_ms_per_prompt"].values())
        )
        result["levels"].append(level)
    if args.out is not None:
        config = {key: str(value) for key, value in vars(args).items()}
        args.out.write_text(json.dumps({"config": config, **result}, indent=1))


if __name__ == "__main__":
    main()
