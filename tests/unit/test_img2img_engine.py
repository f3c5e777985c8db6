"""img2img and inpaint on the real tiny SDXL (no Ray): shared weights, seeds, steps, drops."""

from __future__ import annotations

import numpy as np
import pytest

from common.job import GenerationJob
from deployments.model.request_mode.batching import group_jobs
from deployments.model.request_mode.engine import DiffusersEngine
from tests.support.engines import Recorder, tiny_config

STEPS = 8
SIZE = 64


@pytest.fixture(scope="module")
def engine() -> DiffusersEngine:
    return DiffusersEngine(tiny_config(default_steps=STEPS))


def init_image(seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (SIZE, SIZE, 3), dtype=np.uint8)


def center_mask() -> np.ndarray:
    mask = np.zeros((SIZE, SIZE), np.uint8)
    mask[16:48, 16:48] = 255
    return mask


def job(
    *seeds: int,
    mode: str = "img2img",
    strength: float = 0.5,
    image: np.ndarray | None = None,
    prompt: str = "a cat",
) -> GenerationJob:
    return GenerationJob(
        "r",
        prompt,
        None,
        seeds,
        SIZE,
        SIZE,
        STEPS,
        5.0,
        mode=mode,  # type: ignore[arg-type]
        init_image=init_image() if image is None else image,
        mask=center_mask() if mode == "inpaint" else None,
        strength=strength,
    )


def run(engine: DiffusersEngine, *jobs: GenerationJob, observer: object = None) -> np.ndarray:
    [group] = group_jobs(list(jobs))
    return engine.generate(group, observer).images  # type: ignore[arg-type]


def test_derived_pipelines_share_the_loaded_weights(engine: DiffusersEngine) -> None:
    img2img = engine.pipelines.for_mode("img2img")
    inpaint = engine.pipelines.for_mode("inpaint")
    for name in ("unet", "vae", "text_encoder", "text_encoder_2"):
        assert getattr(img2img, name) is getattr(engine.pipe, name)
        assert getattr(inpaint, name) is getattr(engine.pipe, name)
    assert engine.pipelines.for_mode("img2img") is img2img  # built once
    assert engine.pipe.unet.dtype == engine.pipe.vae.dtype


def test_img2img_output_size_and_seed_determinism(engine: DiffusersEngine) -> None:
    first = run(engine, job(1, 2))
    assert first.shape == (2, SIZE, SIZE, 3) and first.dtype == np.uint8
    again = run(engine, job(1, 2))
    assert np.array_equal(first, again)
    assert not np.array_equal(first[0], first[1])


def test_init_image_changes_the_result(engine: DiffusersEngine) -> None:
    a = run(engine, job(3, image=init_image(1)))
    b = run(engine, job(3, image=init_image(2)))
    assert np.abs(a.astype(int) - b.astype(int)).mean() > 1


def test_a_seed_gives_the_same_image_alone_or_in_a_batch(engine: DiffusersEngine) -> None:
    alone = run(engine, job(7)).astype(int)
    batched = run(engine, job(5, 6), job(7, image=init_image())).astype(int)
    assert np.abs(alone[0] - batched[2]).max() <= 1


def test_strength_sets_the_steps_the_loop_runs(engine: DiffusersEngine) -> None:
    recorder = Recorder()
    run(engine, job(1, strength=0.5), observer=recorder)
    assert [c[0] for c in recorder.calls] == [1, 2, 3, 4]
    assert all(c[1] == 4 for c in recorder.calls)


def test_img2img_rows_can_leave_mid_call(engine: DiffusersEngine) -> None:
    full = run(engine, job(1, 2, 3, strength=1.0)).astype(int)
    recorder = Recorder(drop_at=2, drop=frozenset({1}))
    [group] = group_jobs([job(1, 2, 3, strength=1.0)])
    output = engine.generate(group, recorder)
    assert output.rows == [0, 2]
    assert np.abs(output.images.astype(int) - full[[0, 2]]).max() <= 1


def test_inpaint_runs_to_the_end_without_dropping(engine: DiffusersEngine) -> None:
    recorder = Recorder(drop_at=2, drop=frozenset({1}))
    [group] = group_jobs([job(1, 2, mode="inpaint", strength=1.0)])
    output = engine.generate(group, recorder)
    assert output.rows == [0, 1]  # the inpaint loop keeps per-row state it does not expose
    assert [c[0] for c in recorder.calls] == list(range(1, STEPS + 1))


def test_inpaint_changes_the_masked_area_most(engine: DiffusersEngine) -> None:
    """Outside the mask the inpaint loop pins the latents to the init image's, so a
    different prompt changes the masked area far more than the rest. (Pixels outside
    the mask are pasted back exactly by the encoder; see test_uploads.)"""
    image = init_image(4)
    [a] = run(engine, job(1, mode="inpaint", strength=1.0, image=image)).astype(int)
    [b] = run(engine, job(1, mode="inpaint", strength=1.0, image=image, prompt="a dog"))
    diff = np.abs(a - b.astype(int)).mean(axis=2)
    inside = center_mask() == 255
    # Far from the mask's edge (the VAE's receptive field blurs it).
    far = np.ones_like(inside)
    far[8:56, 8:56] = False
    assert diff[inside].mean() > 3 * diff[far].mean()


def test_groups_split_by_mode_and_strength() -> None:
    txt = GenerationJob("a", "p", None, (1,), SIZE, SIZE, STEPS, 5.0)
    groups = group_jobs(
        [txt, job(2), job(3, strength=0.7), job(4), job(5, mode="inpaint", strength=0.5)]
    )
    assert [(g.mode, g.strength, g.size) for g in groups] == [
        ("txt2img", None, 1),
        ("img2img", 0.5, 2),
        ("img2img", 0.7, 1),
        ("inpaint", 0.5, 1),
    ]
    assert groups[1].init_images is not None and len(groups[1].init_images) == 2
    assert groups[3].masks is not None and groups[0].init_images is None


def test_job_refuses_inconsistent_image_inputs() -> None:
    with pytest.raises(ValueError, match="init_image"):
        GenerationJob("a", "p", None, (1,), SIZE, SIZE, STEPS, 5.0, mode="img2img")
    with pytest.raises(ValueError, match="init_image must be"):
        GenerationJob(
            "a", "p", None, (1,), SIZE, SIZE, STEPS, 5.0, mode="img2img",
            init_image=np.zeros((8, 8, 3), np.uint8), strength=0.5,
        )  # fmt: skip
