"""The real diffusers engine on the built-in tiny SDXL (no Ray): loading, seeds, batching."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from common.job import GenerationJob
from deployments.model.families.sdxl.tiny import ensure_tiny_sdxl, resolve_builtin
from deployments.model.request_mode.batching import group_jobs
from deployments.model.request_mode.engine import DiffusersEngine
from tests.support.engines import STEPS, Recorder, tiny_config


@pytest.fixture(scope="module")
def engine() -> DiffusersEngine:
    return DiffusersEngine(tiny_config())


def run(engine: DiffusersEngine, *seeds: int, prompt: str = "a cat", size: int = 64) -> np.ndarray:
    job = GenerationJob("r", prompt, None, seeds, size, size, STEPS, 5.0)
    [group] = group_jobs([job])
    return engine.generate(group).images


def test_builtin_is_cached_in_pretrained_layout(tmp_path: Path) -> None:
    folder = ensure_tiny_sdxl(tmp_path)
    assert (folder / "model_index.json").is_file()
    assert (folder / "tokenizer" / "tokenizer.json").is_file()
    assert (folder / "unet" / "diffusion_pytorch_model.safetensors").is_file()
    before = (folder / "unet" / "diffusion_pytorch_model.safetensors").stat().st_mtime_ns
    assert ensure_tiny_sdxl(tmp_path) == folder
    assert (folder / "unet" / "diffusion_pytorch_model.safetensors").stat().st_mtime_ns == before


def test_two_builds_have_identical_weights(tmp_path: Path) -> None:
    first = ensure_tiny_sdxl(tmp_path / "a") / "unet" / "diffusion_pytorch_model.safetensors"
    second = ensure_tiny_sdxl(tmp_path / "b") / "unet" / "diffusion_pytorch_model.safetensors"
    assert first.read_bytes() == second.read_bytes()


def test_unknown_builtin_is_refused() -> None:
    with pytest.raises(ValueError, match="tiny-sdxl"):
        resolve_builtin("builtin:huge-sdxl")


def test_output_is_uint8_at_the_generation_size(engine: DiffusersEngine) -> None:
    out = run(engine, 1, 2)
    assert out.shape == (2, 64, 64, 3) and out.dtype == np.uint8
    assert out.std() > 0  # noise, but not a constant image


def test_same_seed_same_image(engine: DiffusersEngine) -> None:
    assert np.array_equal(run(engine, 42), run(engine, 42))


def test_different_seeds_differ(engine: DiffusersEngine) -> None:
    out = run(engine, 1, 2)
    assert not np.array_equal(out[0], out[1])


def test_seed_gives_the_same_image_alone_or_inside_a_batch(engine: DiffusersEngine) -> None:
    alone = run(engine, 7)[0].astype(int)
    batched = run(engine, 5, 6, 7, 8)[2].astype(int)
    # CPU math is not batch-invariant to the bit: allow +-1/255 per channel.
    assert np.abs(alone - batched).max() <= 1


def test_prompt_changes_the_image(engine: DiffusersEngine) -> None:
    assert not np.array_equal(run(engine, 3, prompt="a cat"), run(engine, 3, prompt="a dog"))


def test_unet_weights_replace_the_checkpoint_unet(tmp_path: Path, engine: DiffusersEngine) -> None:
    import torch
    from safetensors.torch import save_file

    state = {k: v.clone() for k, v in engine.pipe.unet.state_dict().items()}
    state["conv_out.bias"] = state["conv_out.bias"] + 0.5
    weights = tmp_path / "unet.safetensors"
    save_file(state, str(weights))
    patched = DiffusersEngine(tiny_config(unet_weights=str(weights)))
    assert torch.equal(patched.pipe.unet.conv_out.bias, state["conv_out.bias"])
    assert not np.array_equal(run(patched, 3), run(engine, 3))


def test_missing_unet_weights_file_fails_loudly(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="unet_weights"):
        DiffusersEngine(tiny_config(unet_weights=str(tmp_path / "nope.safetensors")))


def test_scheduler_override(tmp_path: Path) -> None:
    cfg = tiny_config(
        scheduler={
            "class_name": "EulerDiscreteScheduler",
            "config": {"timestep_spacing": "trailing"},
        }
    )
    patched = DiffusersEngine(cfg)
    assert patched.pipe.scheduler.config.timestep_spacing == "trailing"


def test_unknown_scheduler_fails_loudly() -> None:
    with pytest.raises(ValueError, match="NopeScheduler"):
        DiffusersEngine(tiny_config(scheduler={"class_name": "NopeScheduler"}))


def group_for(*seeds: int):
    [group] = group_jobs([GenerationJob("r", "a cat", None, seeds, 64, 64, STEPS, 5.0)])
    return group


def test_observer_sees_every_step_with_latent_previews(engine: DiffusersEngine) -> None:
    recorder = Recorder()
    output = engine.generate(group_for(1, 2), recorder)
    assert [c[0] for c in recorder.calls] == list(range(1, STEPS + 1))
    assert all(c[1] == STEPS and c[2] == [0, 1] for c in recorder.calls)
    assert recorder.previews[0].shape == (2, 8, 8, 3) and recorder.previews[0].dtype == np.uint8
    assert output.rows == [0, 1] and output.images.shape == (2, 64, 64, 3)


def test_dropped_rows_leave_and_the_rest_are_unchanged(engine: DiffusersEngine) -> None:
    full = engine.generate(group_for(1, 2, 3)).images.astype(int)
    recorder = Recorder(drop_at=2, drop=frozenset({1}))
    output = engine.generate(group_for(1, 2, 3), recorder)
    assert output.rows == [0, 2]
    assert [c[2] for c in recorder.calls] == [[0, 1, 2], [0, 1, 2], [0, 2], [0, 2]]
    assert np.abs(output.images.astype(int) - full[[0, 2]]).max() <= 1


def test_dropping_every_row_stops_the_call(engine: DiffusersEngine) -> None:
    recorder = Recorder(drop_at=1, drop=frozenset({0, 1}))
    output = engine.generate(group_for(1, 2), recorder)
    assert output.rows == [] and output.images.shape[0] == 0
    assert len(recorder.calls) == 1


def test_non_finite_pixels_are_flagged_per_image(engine: DiffusersEngine) -> None:
    from types import SimpleNamespace

    real = engine.pipe
    images = np.full((3, 8, 8, 3), 0.5, np.float32)
    images[1, 2, 2, 0] = np.nan

    class NaNPipe:
        scheduler = real.scheduler
        unet = real.unet

        def __call__(self, **kwargs: object) -> SimpleNamespace:
            return SimpleNamespace(images=images)

    engine.pipe = NaNPipe()
    try:
        output = engine.generate(group_for(1, 2, 3))
    finally:
        engine.pipe = real
    assert output.invalid_rows == [1] and output.rows == [0, 1, 2]
    assert output.images.dtype == np.uint8


def test_rows_can_leave_a_deepcache_call(engine: DiffusersEngine) -> None:
    """Cached deep features hold the old batch; a drop must invalidate them, not crash."""
    [group] = group_jobs(
        [GenerationJob("r", "a cat", None, (1, 2, 3), 64, 64, 6, 5.0, cache_interval=2)]
    )
    recorder = Recorder(drop_at=3, drop=frozenset({0}))
    output = engine.generate(group, recorder)
    assert output.rows == [1, 2] and output.images.shape == (2, 64, 64, 3)


def test_memory_layout_and_vae_switches_keep_the_image(engine: DiffusersEngine) -> None:
    tuned = DiffusersEngine(
        tiny_config(performance={"channels_last": True, "vae_slicing": True, "vae_tiling": True})
    )
    assert tuned.pipe.vae.use_slicing and tuned.pipe.vae.use_tiling
    baseline, switched = run(engine, 5, 6)[1].astype(int), run(tuned, 5, 6)[1].astype(int)
    assert np.abs(baseline - switched).max() <= 1


def test_compiled_unet_generates_the_same_image(engine: DiffusersEngine) -> None:
    compiled = DiffusersEngine(tiny_config(performance={"compile_unet": True}))
    assert type(compiled.pipe.unet).__name__ == "OptimizedModule"
    diff = np.abs(run(engine, 9).astype(int) - run(compiled, 9).astype(int))
    assert diff.max() <= 2
