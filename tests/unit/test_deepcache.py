"""DeepCache and scheduler swaps on the real tiny SDXL engine, and their batching keys."""

from __future__ import annotations

import numpy as np
import pytest

from common.job import GenerationJob, SchedulerSpec
from common.model_config import ModelConfig
from deployments.model.families.sdxl.deepcache import DeepCache, deep_modules
from deployments.model.request_mode.batching import group_jobs
from deployments.model.request_mode.engine import DiffusersEngine
from serve_app.dialects.samplers import SAMPLERS, resolve_sampler

STEPS = 12


@pytest.fixture(scope="module")
def engine() -> DiffusersEngine:
    config = {"id": "tiny", "source": "builtin:tiny-sdxl", "torch_threads": 2}
    return DiffusersEngine(ModelConfig.model_validate(config))


def job(seed: int = 3, steps: int = STEPS, **kw: object) -> GenerationJob:
    return GenerationJob("r", "a cat", None, (seed,), 64, 64, steps, 5.0, **kw)  # type: ignore[arg-type]


def run(engine: DiffusersEngine, *jobs: GenerationJob) -> list[np.ndarray]:
    return [engine.generate(group).images for group in group_jobs(list(jobs))]


def test_interval_one_is_exactly_no_cache(engine: DiffusersEngine) -> None:
    [plain] = run(engine, job())
    [same] = run(engine, job(cache_interval=1))
    assert np.array_equal(plain, same)


def test_cached_steps_skip_the_deep_blocks(engine: DiffusersEngine) -> None:
    unet = engine.pipe.unet
    with DeepCache(unet, 3) as cache:
        group = group_jobs([job()])[0]
        engine._call_pipeline(
            group, [__import__("torch").Generator().manual_seed(1)], _stepper(cache)
        )
    # Steps 0, 3, 6, 9 run the deep part; the other eight reuse it.
    assert (cache.full_calls, cache.cached_calls) == (4, 8)


def _stepper(cache: DeepCache):
    def callback(pipe, step, timestep, kwargs):  # type: ignore[no-untyped-def]
        cache.step_done(step)
        return kwargs

    return callback


def test_cache_changes_the_image_but_stays_close(engine: DiffusersEngine) -> None:
    [plain] = run(engine, job())
    [cached] = run(engine, job(cache_interval=3))
    diff = np.abs(plain.astype(int) - cached.astype(int))
    assert diff.max() > 0
    assert diff.mean() < 8  # an approximation of the same image, not another image


def test_cached_image_is_the_same_alone_or_in_a_batch(engine: DiffusersEngine) -> None:
    alone = engine.generate(group_jobs([job(seed=8, cache_interval=2)])[0]).images
    batch = engine.generate(
        group_jobs([job(seed=7, cache_interval=2), job(seed=8, cache_interval=2)])[0]
    ).images
    assert np.abs(alone[0].astype(int) - batch[1].astype(int)).max() <= 1


def test_forwards_are_restored_even_after_a_failure(engine: DiffusersEngine) -> None:
    modules = deep_modules(engine.pipe.unet)
    with pytest.raises(RuntimeError), DeepCache(engine.pipe.unet, 2):
        assert all("forward" in vars(m) for m in modules)
        raise RuntimeError("boom")
    assert not any("forward" in vars(m) for m in modules)


def test_groups_split_by_cache_interval_and_scheduler() -> None:
    euler_a = SchedulerSpec("EulerAncestralDiscreteScheduler")
    groups = group_jobs(
        [
            job(),
            job(cache_interval=1),  # same call as no cache
            job(cache_interval=3),
            job(cache_interval=3),
            job(scheduler=euler_a),
        ]
    )
    assert [(g.size, g.cache_interval, g.scheduler) for g in groups] == [
        (2, None, None),
        (2, 3, None),
        (1, None, euler_a),
    ]


@pytest.mark.parametrize("sampler", sorted(SAMPLERS))
def test_every_mapped_sampler_runs(engine: DiffusersEngine, sampler: str) -> None:
    spec = resolve_sampler(sampler, None)
    [image] = run(engine, job(steps=3, scheduler=spec))
    assert image.shape == (1, 64, 64, 3) and image.std() > 0
    assert engine.pipe.scheduler is engine.base_scheduler  # swapped back after the call


def test_a_sampler_changes_the_image(engine: DiffusersEngine) -> None:
    [euler] = run(engine, job(steps=4, scheduler=resolve_sampler("Euler", None)))
    [karras] = run(engine, job(steps=4, scheduler=resolve_sampler("DPM++ 2M Karras", None)))
    assert not np.array_equal(euler, karras)
