"""Step-level batching on the tiny model: diffusers equivalence, batch invariance, joins.

The equivalence table runs the step runner against ``pipe(...)`` itself; the rest
drives a real :class:`ModelServer` (step mode, real engine, no Ray cluster).
"""

from __future__ import annotations

import asyncio
import threading
from typing import Any

import numpy as np
import pytest
import torch

from common.job import GenerationJob, SchedulerSpec
from deployments.model.request_mode.engine import DiffusersEngine
from deployments.model.scheduler.runner import StepRunner
from deployments.model.scheduler.submission import Submission
from deployments.model.server import ModelServer
from tests.support.engines import tiny_config

SIZE = 64  # 8x8 latents: cheap on 2 shared cores
TOLERANCE = 1  # uint8 levels: CPU kernels differ by +-1/255 between batch sizes


@pytest.fixture(scope="module")
def engine() -> DiffusersEngine:
    return DiffusersEngine(tiny_config())


def job(
    rid: str,
    *seeds: int,
    steps: int = 4,
    guidance: float = 5.0,
    prompt: str = "a lighthouse",
    **kw: Any,
) -> GenerationJob:
    return GenerationJob(rid, prompt, None, seeds, SIZE, SIZE, steps, guidance, **kw)


def run_alone(runner: StepRunner, j: GenerationJob) -> np.ndarray:
    rows = runner.admit(j, None)
    while not rows[0].done:
        runner.tick(rows)
    return runner.decode(rows)[0]


def to_uint8(images: np.ndarray) -> np.ndarray:
    return (np.asarray(images) * 255.0).round().clip(0, 255).astype(np.uint8)


def max_diff(a: np.ndarray, b: np.ndarray) -> int:
    return int(np.abs(a.astype(int) - b.astype(int)).max())


SAMPLERS = [
    ("Euler", SchedulerSpec("EulerDiscreteScheduler")),
    ("Euler a", SchedulerSpec("EulerAncestralDiscreteScheduler")),
    ("DPM++ 2M", SchedulerSpec("DPMSolverMultistepScheduler")),
    ("DDIM", SchedulerSpec("DDIMScheduler")),
    ("Heun", SchedulerSpec("HeunDiscreteScheduler")),
    ("DPM2", SchedulerSpec("KDPM2DiscreteScheduler")),
    ("DPM2 a", SchedulerSpec("KDPM2AncestralDiscreteScheduler")),
    ("DPM++ 2M SDE", SchedulerSpec(
        "DPMSolverMultistepScheduler", (("algorithm_type", "sde-dpmsolver++"),))),
    ("LMS", SchedulerSpec("LMSDiscreteScheduler")),
    ("PLMS", SchedulerSpec("PNDMScheduler", (("skip_prk_steps", True),))),
    ("UniPC", SchedulerSpec("UniPCMultistepScheduler")),
    ("Euler Karras", SchedulerSpec("EulerDiscreteScheduler", (("use_karras_sigmas", True),))),
    ("Lightning: trailing Euler, guidance 0", SchedulerSpec(
        "EulerDiscreteScheduler", (("timestep_spacing", "trailing"),))),
]  # fmt: skip


@pytest.mark.parametrize(("name", "spec"), SAMPLERS, ids=[s[0] for s in SAMPLERS])
def test_step_loop_equals_the_diffusers_pipeline(
    engine: DiffusersEngine, name: str, spec: SchedulerSpec
) -> None:
    guidance = 0.0 if "Lightning" in name else 5.0
    j = job("eq", 11, 12, guidance=guidance, scheduler=spec)
    mine = run_alone(engine.step_runner(), j)
    engine.pipe.scheduler = engine.scheduler_for(spec)
    try:
        ref = engine.pipe(
            prompt=[j.prompt] * 2,
            num_inference_steps=j.steps,
            guidance_scale=guidance,
            generator=[torch.Generator().manual_seed(s) for s in j.seeds],
            width=SIZE,
            height=SIZE,
            output_type="np",
        ).images
    finally:
        engine.pipe.scheduler = engine.base_scheduler
    assert mine.shape == (2, SIZE, SIZE, 3)
    assert max_diff(mine, to_uint8(ref)) <= TOLERANCE


def test_img2img_and_inpaint_rows_equal_the_diffusers_pipelines(engine: DiffusersEngine) -> None:
    rng = np.random.default_rng(0)
    init = rng.integers(0, 256, (SIZE, SIZE, 3), dtype=np.uint8)
    mask = np.zeros((SIZE, SIZE), np.uint8)
    mask[:, SIZE // 2 :] = 255
    runner = engine.step_runner()
    for mode, strength, extra in (("img2img", 0.5, {}), ("inpaint", 1.0, {"mask": mask})):
        j = job(mode, 3, steps=6, mode=mode, init_image=init, strength=strength, **extra)
        mine = run_alone(runner, j)
        ref = engine.generate(_group_of(j)).images
        assert max_diff(mine, ref) <= TOLERANCE, mode


def _group_of(j: GenerationJob) -> Any:
    from deployments.model.request_mode.batching import group_jobs

    return group_jobs([j])[0]


def test_rows_with_different_steps_guidance_and_schedulers_share_one_call(
    engine: DiffusersEngine,
) -> None:
    """Mixed rows in one tick give each row what it gives alone."""
    runner = engine.step_runner()
    jobs = [
        job("a", 1, steps=3, guidance=5.0),
        job("b", 2, steps=5, guidance=0.0, scheduler=SchedulerSpec("DDIMScheduler")),
        job("c", 3, 4, steps=4, guidance=2.0, scheduler=SchedulerSpec("HeunDiscreteScheduler")),
    ]
    alone = {j.request_id: run_alone(runner, j) for j in jobs}
    rows = [row for j in jobs for row in runner.admit(j, j.request_id)]
    out: dict[str, list[np.ndarray]] = {}
    while rows:
        runner.tick(rows)
        done = [r for r in rows if r.done]
        if done:
            for row, image in zip(done, runner.decode(done)[0], strict=True):
                out.setdefault(row.owner, []).append(image)
        rows = [r for r in rows if not r.done]
    for rid, images in out.items():
        assert max_diff(np.stack(images), alone[rid]) <= TOLERANCE, rid


# -- through the model server ------------------------------------------------------


def step_server(engine: DiffusersEngine, wrap: Any = None) -> ModelServer:
    config = tiny_config(warmup=False, generation_scale=0.125).model_dump()
    family = engine.family if wrap is None else wrap(engine.family)
    return ModelServer(config, family_factory=lambda _: family)


async def wait_for(predicate: Any, timeout: float = 60) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while not predicate():
        assert asyncio.get_running_loop().time() < deadline, "timed out"
        await asyncio.sleep(0.005)


async def test_a_request_joining_mid_flight_equals_it_alone(engine: DiffusersEngine) -> None:
    server = step_server(engine)
    alone = await server.generate_pixels(job("alone", 21, 22, steps=6))
    long = asyncio.create_task(server.generate_pixels(job("long", 5, steps=30, prompt="a harbour")))
    await wait_for(lambda: server.stats()["unet_calls"] >= 3)
    joined = await server.generate_pixels(job("joined", 21, 22, steps=6))
    assert not long.done()  # it joined a running batch and finished first
    await long
    stats = server.stats()
    assert any(rows > 1 for rows in stats["rows_per_call_histogram"])
    assert max_diff(joined, alone) <= TOLERANCE


async def test_a_short_request_finishes_before_a_long_running_one(engine: DiffusersEngine) -> None:
    server = step_server(engine)
    order: list[str] = []

    async def run(j: GenerationJob) -> None:
        await server.generate_pixels(j)
        order.append(j.request_id)

    long = asyncio.create_task(run(job("long", 1, steps=50)))
    await wait_for(lambda: server.stats()["unet_calls"] >= 1)
    await run(job("short", 2, steps=4))
    await long
    assert order == ["short", "long"]


async def test_stream_gets_previews_at_its_steps_then_the_final(engine: DiffusersEngine) -> None:
    server = step_server(engine)
    sub = Submission(job("s", 3, 4, steps=8, partial_images=3), stream=True)
    events = [event async for event in server._submit(sub)]
    assert [(e.kind, e.partial_index) for e in events] == [
        ("partial", 0), ("partial", 1), ("partial", 2), ("final", None),
    ]  # fmt: skip
    assert events[0].pixels.shape == (2, SIZE // 8, SIZE // 8, 3)
    assert server.stats()["partial_images_sent"] == 6


async def test_a_job_asking_for_progress_gets_every_step_in_step_mode(
    engine: DiffusersEngine,
) -> None:
    server = step_server(engine)
    sub = Submission(job("p", 7, 8, steps=4, report_progress=True), stream=True)
    events = [event async for event in server._submit(sub)]
    assert [(e.kind, e.step, e.total_steps) for e in events] == [
        ("progress", 1, 4), ("progress", 2, 4), ("progress", 3, 4), ("progress", 4, 4),
        ("final", None, None),
    ]  # fmt: skip
    plain = [e async for e in server._submit(Submission(job("q", 9, steps=3), stream=True))]
    assert [e.kind for e in plain] == ["final"]  # streams that did not ask get none


async def test_a_cancelled_request_leaves_at_the_next_step(engine: DiffusersEngine) -> None:
    server = step_server(engine)
    doomed = asyncio.create_task(server.generate_pixels(job("doomed", 1, 2, steps=40)))
    await wait_for(lambda: server.stats()["unet_calls"] >= 2)
    doomed.cancel()
    with pytest.raises(asyncio.CancelledError):
        await doomed
    kept = await server.generate_pixels(job("kept", 3, steps=4))
    assert kept.shape == (1, SIZE, SIZE, 3)
    stats = server.stats()
    assert stats["cancelled_requests"] == 1 and stats["dropped_images"] == 2
    assert 0 < stats["steps_saved"] < 2 * 40


class PoisonFamily:
    """The real family, but a UNet call that includes a row of a poisoned prompt raises
    (a bad input, an OOM)."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)

    def predict(self, rows: Any, cache: Any) -> Any:
        if any("poison" in row.owner.job.prompt for row in rows):
            raise RuntimeError("injected UNet failure")
        return self.inner.predict(rows, cache)


async def test_a_failing_request_fails_alone_and_its_tick_mates_go_on(
    engine: DiffusersEngine,
) -> None:
    server = step_server(engine, PoisonFamily)
    good = asyncio.create_task(server.generate_pixels(job("good", 1, steps=6)))
    await wait_for(lambda: server.stats()["unet_calls"] >= 1)
    bad = GenerationJob("bad", "poison", None, (2,), SIZE, SIZE, 4, 5.0)
    with pytest.raises(RuntimeError, match="injected"):
        await server.generate_pixels(bad)
    assert (await good).shape == (1, SIZE, SIZE, 3)
    stats = server.stats()
    assert stats["failed_requests"] == 1 and stats["isolated_ticks"] >= 1


async def test_rows_of_another_shape_take_turns(engine: DiffusersEngine) -> None:
    server = step_server(engine)
    big = GenerationJob("big", "p", None, (1,), 2 * SIZE, 2 * SIZE, 30, 5.0)
    long = asyncio.create_task(server.generate_pixels(big))
    await wait_for(lambda: server.stats()["unet_calls"] >= 1)
    small = await server.generate_pixels(job("small", 2, steps=4))
    assert small.shape == (1, SIZE, SIZE, 3) and not long.done()
    assert (await long).shape == (1, 2 * SIZE, 2 * SIZE, 3)


async def test_deep_cache_rows_match_the_request_path(engine: DiffusersEngine) -> None:
    server = step_server(engine)
    j = job("dc", 8, steps=6, cache_interval=3)
    mine = await server.generate_pixels(j)
    assert max_diff(mine, engine.generate(_group_of(j)).images) <= TOLERANCE


def test_lora_rows_wrap_every_unet_call_in_unet_batch_order(engine: DiffusersEngine) -> None:
    from common.job import LoraRef

    seen: list[list[tuple[LoraRef, ...]]] = []
    lock = threading.Lock()

    class Recorder:
        def __init__(self, per_row: Any) -> None:
            self.per_row = list(per_row)

        def __enter__(self) -> None:
            with lock:
                seen.append(self.per_row)

        def __exit__(self, *exc: object) -> None:
            return None

    runner = StepRunner(engine.family, Recorder)
    a = (LoraRef("style", 0.5),)
    rows = runner.admit(job("a", 1, guidance=5.0, loras=a), None)
    rows += runner.admit(job("b", 2, guidance=0.0), None)
    runner.tick(rows)
    assert seen == [[a, a, ()]]  # CFG row: uncond and cond entries; then the guidance-0 row
