"""Per-row LoRA deltas on the tiny model: correctness against diffusers/PEFT, and refusals."""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import pytest

from common.errors import APIError
from common.job import GenerationJob, LoraRef
from deployments.model.families.sdxl.family import DEMO_LORAS as DEMO_NAMES
from deployments.model.request_mode.batching import group_jobs
from deployments.model.request_mode.engine import DiffusersEngine
from tests.support.engines import STEPS, tiny_config


@pytest.fixture(scope="module")
def lora_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("loras")


@pytest.fixture(scope="module")
def engine(lora_dir: Path) -> DiffusersEngine:
    return DiffusersEngine(tiny_config(loras={"dirs": [str(lora_dir)], "max_loaded": 3}))


def job(*seeds: int, loras: tuple[LoraRef, ...] = (), prompt: str = "a cat") -> GenerationJob:
    return GenerationJob("r", prompt, None, seeds, 64, 64, STEPS, 5.0, loras=loras)


def run(engine: DiffusersEngine, *jobs: GenerationJob) -> np.ndarray:
    for j in jobs:
        engine.loras.ensure(j.loras)
    (group,) = group_jobs(list(jobs))
    return engine.generate(group).images.astype(int)


def unet_checksum(engine: DiffusersEngine) -> str:
    digest = hashlib.sha256()
    for name, tensor in sorted(engine.pipe.unet.state_dict().items()):
        digest.update(name.encode())
        digest.update(tensor.detach().cpu().numpy().tobytes())
    return digest.hexdigest()


def test_demo_adapters_are_written_and_listed(engine: DiffusersEngine, lora_dir: Path) -> None:
    assert engine.loras.registry.names() == list(DEMO_NAMES)
    listing = engine.loras.registry.listing()
    assert {info.rank for info in listing} == {4}
    assert all(info.size_bytes and info.error is None for info in listing)


def test_demo_adapter_changes_the_image_visibly(engine: DiffusersEngine) -> None:
    base = run(engine, job(3))
    adapted = run(engine, job(3, loras=(LoraRef("demo-1", 1.0),)))
    assert np.abs(adapted - base).mean() > 5


def test_same_adapter_alone_or_in_a_mixed_batch(engine: DiffusersEngine) -> None:
    a1 = (LoraRef("demo-1", 1.0),)
    a2 = (LoraRef("demo-2", 0.7), LoraRef("demo-3", 0.5))
    alone = run(engine, job(5, loras=a1))
    base = run(engine, job(5))
    two = run(engine, job(5, loras=a2))
    mixed = run(engine, job(6, loras=a2), job(5, loras=a1), job(5), job(5, loras=a2))
    assert np.abs(mixed[1] - alone[0]).max() <= 1
    assert np.abs(mixed[2] - base[0]).max() <= 1
    assert np.abs(mixed[3] - two[0]).max() <= 1


def test_scale_zero_equals_no_adapter(engine: DiffusersEngine) -> None:
    base = run(engine, job(8))
    zero = run(engine, job(8, loras=(LoraRef("demo-1", 0.0),)))
    assert np.abs(zero - base).max() <= 1


def test_base_weights_are_unchanged_after_adapted_calls(engine: DiffusersEngine) -> None:
    before = unet_checksum(engine)
    run(engine, job(1, 2, loras=(LoraRef("demo-1", 1.5), LoraRef("demo-2", -1.0))))
    assert unet_checksum(engine) == before


def test_two_adapters_equal_diffusers_set_adapters(engine: DiffusersEngine, lora_dir: Path) -> None:
    pytest.importorskip("peft")
    import torch
    from diffusers import StableDiffusionXLPipeline

    from deployments.model.families.sdxl.tiny import resolve_builtin

    ours = run(engine, job(11, loras=(LoraRef("demo-1", 0.8), LoraRef("demo-2", 0.6))))
    pipe = StableDiffusionXLPipeline.from_pretrained(
        resolve_builtin("builtin:tiny-sdxl"), local_files_only=True
    )
    pipe.set_progress_bar_config(disable=True)
    pipe.load_lora_weights(str(lora_dir), weight_name="demo-1.safetensors", adapter_name="a")
    pipe.load_lora_weights(str(lora_dir), weight_name="demo-2.safetensors", adapter_name="b")
    pipe.set_adapters(["a", "b"], [0.8, 0.6])
    torch.set_num_threads(2)
    with torch.inference_mode():
        theirs = pipe(
            prompt=["a cat"],
            num_inference_steps=STEPS,
            guidance_scale=5.0,
            width=64,
            height=64,
            generator=[torch.Generator("cpu").manual_seed(11)],
            output_type="np",
        ).images
    theirs = (np.asarray(theirs) * 255).round().clip(0, 255).astype(int)
    assert np.abs(ours - theirs).max() <= 2


def _kohya_copy(src: Path, dst: Path) -> None:
    """The demo adapter with kohya keys (``lora_unet_..._to_q.lora_down.weight``, alpha)."""
    import torch
    from safetensors.torch import load_file, save_file

    out = {}
    for key, tensor in load_file(str(src)).items():
        module = key.removeprefix("unet.").rsplit(".lora_", 1)[0]
        kohya = "lora_unet_" + module.replace(".", "_")
        kind = "lora_down" if ".lora_A." in key else "lora_up"
        out[f"{kohya}.{kind}.weight"] = tensor
        out[f"{kohya}.alpha"] = torch.tensor(4.0)
    save_file(out, str(dst))


def test_kohya_keys_load_like_diffusers_keys(engine: DiffusersEngine, lora_dir: Path) -> None:
    _kohya_copy(lora_dir / "demo-1.safetensors", lora_dir / "demo-1-kohya.safetensors")
    engine.loras.registry.refresh()
    native = run(engine, job(4, loras=(LoraRef("demo-1", 1.0),)))
    kohya = run(engine, job(4, loras=(LoraRef("demo-1-kohya", 1.0),)))
    assert np.abs(native - kohya).max() <= 1


def _write_sd15_like(path: Path) -> None:
    import torch
    from safetensors.torch import save_file

    # SD 1.5's first down block has attention; the SDXL UNet's does not.
    module = "down_blocks.0.attentions.0.transformer_blocks.0.attn1.to_q"
    save_file(
        {
            f"unet.{module}.lora_A.weight": torch.zeros(4, 320),
            f"unet.{module}.lora_B.weight": torch.zeros(320, 4),
        },
        str(path),
    )


@pytest.mark.parametrize(
    "writer,code",
    [
        (lambda p, demo: p.write_bytes(b"\x00garbage" * 64), "invalid_lora"),
        (
            lambda p, demo: p.write_bytes(demo.read_bytes()[: demo.stat().st_size // 2]),
            "invalid_lora",
        ),
        (lambda p, demo: _write_sd15_like(p), "lora_wrong_architecture"),
    ],
    ids=["corrupt", "truncated", "sd15-on-sdxl"],
)
def test_bad_files_are_400s_and_the_next_call_works(
    engine: DiffusersEngine, lora_dir: Path, writer, code: str
) -> None:
    bad = lora_dir / "bad.safetensors"
    writer(bad, lora_dir / "demo-4.safetensors")
    engine.loras.registry.refresh()
    try:
        with pytest.raises(APIError) as caught:
            engine.loras.ensure((LoraRef("demo-1"), LoraRef("bad")))
        assert caught.value.status == 400
        assert caught.value.code == code
        assert caught.value.param == "loras[1]"
        assert "'bad'" in caught.value.message
    finally:
        bad.unlink()
        engine.loras.registry.refresh()
    assert run(engine, job(1, loras=(LoraRef("demo-1"),))).shape == (1, 64, 64, 3)


def test_unknown_adapter_is_a_400_naming_the_index(engine: DiffusersEngine) -> None:
    with pytest.raises(APIError) as caught:
        engine.loras.ensure((LoraRef("nope"),))
    assert (caught.value.status, caught.value.param) == (400, "loras[0]")
    assert caught.value.code == "lora_not_found"


def test_hub_references_are_refused_for_a_local_only_model(engine: DiffusersEngine) -> None:
    with pytest.raises(APIError) as caught:
        engine.loras.ensure((LoraRef("someone/some-lora/lora.safetensors"),))
    assert caught.value.code == "lora_hub_disabled"


def test_lru_evicts_unpinned_adapters_only(engine: DiffusersEngine) -> None:
    bank = engine.loras
    bank.pin(["demo-1"])
    try:
        for name in DEMO_NAMES:
            bank.ensure((LoraRef(name),))
        loaded = bank.loaded()
        assert len(loaded) <= 3 and "demo-1" in loaded and "demo-4" in loaded
    finally:
        bank.unpin(["demo-1"])


def test_lora_rows_applies_one_plan_per_unet_row(engine: DiffusersEngine) -> None:
    """The step scheduler's seam: an explicit per-row list around a raw UNet call."""
    import torch

    bank = engine.loras
    bank.ensure((LoraRef("demo-1"),))
    unet = engine.pipe.unet
    gen = torch.Generator("cpu").manual_seed(0)
    sample = torch.randn(3, 4, 8, 8, generator=gen)
    hidden = torch.randn(3, 77, 64, generator=gen)
    added = {"text_embeds": torch.randn(3, 32, generator=gen), "time_ids": torch.zeros(3, 6)}

    def forward() -> torch.Tensor:
        with torch.inference_mode():
            return unet(sample, 10, hidden, added_cond_kwargs=added).sample

    base = forward()
    with bank.rows([(), (LoraRef("demo-1", 1.0),), ()]):
        mixed = forward()
    torch.testing.assert_close(mixed[0], base[0], atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(mixed[2], base[2], atol=1e-5, rtol=1e-4)
    assert (mixed[1] - base[1]).abs().mean() > 1e-3
    after = forward()
    torch.testing.assert_close(after, base)
