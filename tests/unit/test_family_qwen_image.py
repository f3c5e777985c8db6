"""The qwen_image family against diffusers' own Qwen-Image pipelines, on the tiny weights.

Faithfulness: the step loop's rows (joined at different steps, sharing transformer
calls, cond and uncond entries of different text lengths padded into one call) give
what ``QwenImagePipeline``, ``QwenImageImg2ImgPipeline`` and ``QwenImageInpaintPipeline``
give for the same prompt, negative prompt, seed and steps, within 1/255 mean, with
true CFG on, off and mixed. Then what only the family decides: true CFG's passes,
per-row LoRA, previews, the 400s.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from diffusers import QwenImagePipeline
from PIL import Image

from common.errors import APIError
from common.job import GenerationJob, LoraRef, SchedulerSpec
from common.model_config import ModelConfig
from deployments.model.families.qwen_image import tiny
from deployments.model.families.qwen_image.family import QwenImageFamily, pad_texts
from deployments.model.families.qwen_image.tiny import (
    TEMPLATE_PREFIX_TOKENS,
    ensure_tiny_qwen_image,
)
from deployments.model.lora.bank import LoraBank, bank_for
from deployments.model.scheduler.runner import StepRunner
from deployments.model.server import ModelServer
from tests.support.family_images import half_mask, init_image, mean_diff, to_uint8

SIZE = 64
STEPS = 4
MEAN_TOLERANCE = 1.0  # uint8 levels, mean over the image
# Per pixel: batch size moves CPU kernels by 1 level at most (measured 1); a missing
# true-CFG norm rescale moved single pixels by 5-32 levels at well under 1 mean.
MAX_TOLERANCE = 2
PROMPTS = ("a lighthouse", "a red fox asleep in deep snow at dawn, soft light")


def qwen_config(**overrides: Any) -> ModelConfig:
    base = {
        "id": "tiny-qwen-image",
        "source": "builtin:tiny-qwen-image",
        "torch_threads": 2,
        "size_multiple": 16,
    }
    return ModelConfig.model_validate({**base, **overrides})


@pytest.fixture(scope="module")
def family() -> QwenImageFamily:
    return QwenImageFamily(qwen_config())


@pytest.fixture(scope="module")
def bank(family: QwenImageFamily, tmp_path_factory: pytest.TempPathFactory) -> LoraBank:
    """The generic LoRA bank over the family's transformer, with its demo adapters."""
    loras = {"dirs": [str(tmp_path_factory.mktemp("qwen-loras"))]}
    bank = bank_for(qwen_config(loras=loras), family.denoiser, family.parse_lora, family.demo_loras)
    assert bank is not None
    bank.ensure(tuple(LoraRef(name) for name in family.demo_loras))
    return bank


@pytest.fixture(scope="module")
def runner(family: QwenImageFamily, bank: LoraBank) -> StepRunner:
    return StepRunner(family, bank.rows)


def job(
    rid: str, *seeds: int, guidance: float = 4.0, prompt: str = PROMPTS[0], **kw: Any
) -> GenerationJob:
    negative = kw.pop("negative_prompt", None)
    steps = kw.pop("steps", STEPS)
    return GenerationJob(rid, prompt, negative, seeds, SIZE, SIZE, steps, guidance, **kw)










def max_diff(a: np.ndarray, b: np.ndarray) -> int:
    return int(np.abs(a.astype(int) - b.astype(int)).max())


def run_staggered(runner: StepRunner, jobs: list[GenerationJob]) -> dict[tuple[str, int], Any]:
    """Admit a job, tick twice, admit the next, ... then tick until every row is done,
    so rows at different steps share transformer calls. Images by (request, index)."""
    pending, live, done = list(jobs), [], {}
    ticks = 0
    while pending or live:
        if pending and ticks % 2 == 0:
            j = pending.pop(0)
            live += [(j.request_id, row) for row in runner.admit(j, None)]
        runner.tick([row for _, row in live])
        ticks += 1
        for rid, row in [item for item in live if item[1].done]:
            done[(rid, row.index)] = runner.decode([row])[0][0]
        live = [item for item in live if not item[1].done]
    return done


def reference(family: QwenImageFamily, j: GenerationJob, seed: int) -> np.ndarray:
    """diffusers' own pipeline for one image (its img2img/inpaint sibling via from_pipe)."""
    pipe = family.pipelines.for_mode(j.mode)
    kwargs: dict[str, Any] = {}
    if j.mode != "txt2img":
        kwargs = {"image": Image.fromarray(init_image()), "strength": j.strength}
    if j.mode == "inpaint":
        kwargs["mask_image"] = Image.fromarray(half_mask(), mode="L")
    negative = j.negative_prompt if j.negative_prompt is not None else ""
    with torch.inference_mode():
        out = pipe(
            prompt=j.prompt,
            negative_prompt=negative if j.guidance > 1 else None,
            true_cfg_scale=j.guidance,
            height=SIZE,
            width=SIZE,
            num_inference_steps=j.steps,
            generator=torch.Generator("cpu").manual_seed(seed),
            output_type="np",
            **kwargs,
        )
    return to_uint8(out.images)[0]


MODES = {
    "txt2img": {},
    "img2img": {"mode": "img2img", "strength": 0.75},
    "inpaint": {"mode": "inpaint", "strength": 1.0},
}
GUIDANCE = {"cfg": (4.0, 2.5), "no-cfg": (1.0, 0.0), "mixed": (3.0, 1.0)}
CASES = [(m, g) for m in MODES for g in GUIDANCE if g != "mixed" or m == "txt2img"]


@pytest.mark.parametrize(("mode", "guidance"), CASES, ids=[f"{m}-{g}" for m, g in CASES])
def test_rows_joined_mid_flight_equal_the_diffusers_pipeline(
    family: QwenImageFamily, runner: StepRunner, mode: str, guidance: str
) -> None:
    extra: dict[str, Any] = dict(MODES[mode])
    if mode != "txt2img":
        extra["init_image"] = init_image()
    if mode == "inpaint":
        extra["mask"] = half_mask()
    first, second = GUIDANCE[guidance]
    # Different prompt lengths, and a negative prompt on one: the CFG entries of one
    # call have three text lengths, padded to one with the mask.
    jobs = [
        job("short", 1, guidance=first, **extra),
        job("long", 2, 3, guidance=second, prompt=PROMPTS[1], negative_prompt="blurry", **extra),
    ]
    ours = run_staggered(runner, jobs)
    for j in jobs:
        for index, seed in enumerate(j.seeds):
            image = ours[(j.request_id, index)]
            assert image.shape == (SIZE, SIZE, 3)
            theirs = reference(family, j, seed)
            diff, worst = mean_diff(image, theirs), max_diff(image, theirs)
            assert diff <= MEAN_TOLERANCE and worst <= MAX_TOLERANCE, (j.request_id, diff, worst)


def test_true_cfg_takes_two_passes_above_1_and_changes_the_image(runner: StepRunner) -> None:
    assert [row.passes for row in runner.admit(job("on", 4, 5, guidance=4.0), None)] == [2, 2]
    assert [row.passes for row in runner.admit(job("off", 4, guidance=1.0), None)] == [1]
    jobs = [job("lo", 9, guidance=1.0), job("mid", 9, guidance=2.0), job("hi", 9)]
    jobs.append(job("neg", 9, negative_prompt="a dark storm"))
    images = [image for _, image in sorted(run_staggered(runner, jobs).items())]
    high, low, mid, negative = images  # sorted by request id
    assert mean_diff(low, mid) > 1.0 and mean_diff(mid, high) > 1.0
    assert mean_diff(high, negative) > 1.0  # the uncond pass is the negative prompt


def test_inpaint_keeps_the_init_latents_outside_the_mask(runner: StepRunner) -> None:
    """After the last step the latents outside the mask are the init image's own (the
    random tiny VAE cannot reconstruct pixels, so this is checked on the latents)."""
    j = job("in", 5, mode="inpaint", init_image=init_image(), mask=half_mask(), strength=1.0)
    (row,) = runner.admit(j, None)
    while not row.done:
        runner.tick([row])
    keep = 1 - row.mask
    assert keep.sum() > 0 and row.mask.sum() > 0
    assert torch.allclose(keep * row.latents, keep * row.image_latents)
    assert not torch.allclose(row.mask * row.latents, row.mask * row.image_latents)


def test_mixed_lora_rows_equal_each_row_alone_and_diffusers_peft(
    family: QwenImageFamily, runner: StepRunner, bank: LoraBank
) -> None:
    names = family.demo_loras
    jobs = [job(f"l{i}", 11, loras=(LoraRef(names[i], 1.0),)) for i in range(2)]
    jobs.append(job("plain", 11, guidance=1.0))
    jobs.append(job("plain-cfg", 11))
    together = run_staggered(runner, jobs)
    for j in jobs:
        alone = run_staggered(runner, [j])[(j.request_id, 0)]
        diff = mean_diff(together[(j.request_id, 0)], alone)
        assert diff <= MEAN_TOLERANCE, (j.request_id, diff)
    assert mean_diff(together[("l0", 0)], together[("plain-cfg", 0)]) > 1.0
    # The row's per-row deltas are what diffusers' own PEFT adapter gives (on a second
    # copy of the pipeline: PEFT rewrites the transformer's modules).
    peft_pipe = QwenImagePipeline.from_pretrained(ensure_tiny_qwen_image(), local_files_only=True)
    peft_pipe.set_progress_bar_config(disable=True)
    peft_pipe.load_lora_weights(str(bank.registry.resolve(names[0])), adapter_name="demo")
    with torch.inference_mode():
        theirs = peft_pipe(
            prompt=PROMPTS[0],
            negative_prompt="",
            true_cfg_scale=4.0,
            height=SIZE,
            width=SIZE,
            num_inference_steps=STEPS,
            generator=torch.Generator("cpu").manual_seed(11),
            output_type="np",
        ).images
    diff = mean_diff(together[("l0", 0)], to_uint8(theirs)[0])
    assert diff <= MEAN_TOLERANCE, diff


def _kohya_copy(src: Path, dst: Path) -> None:
    """A demo adapter in kohya's layout (``lora_unet_..._to_q.lora_down.weight``, alpha)."""
    from safetensors.torch import load_file, save_file

    out = {}
    for key, tensor in load_file(str(src)).items():
        module = key.removeprefix("transformer.").rsplit(".lora_", 1)[0]
        kohya = "lora_unet_" + module.replace(".", "_")
        kind = "lora_down" if ".lora_A." in key else "lora_up"
        out[f"{kohya}.{kind}.weight"] = tensor
        out[f"{kohya}.alpha"] = torch.tensor(4.0)  # alpha == rank: scale 1, as the native file
    save_file(out, str(dst))


def test_kohya_keys_parse_like_diffusers_keys(family: QwenImageFamily, bank: LoraBank) -> None:
    """``QwenImagePipeline.lora_state_dict`` converts kohya keys onto the transformer."""
    native_path = bank.registry.resolve(family.demo_loras[0])
    kohya_path = native_path.with_name("kohya-copy.safetensors")
    _kohya_copy(native_path, kohya_path)
    native = family.parse_lora(native_path, "native")
    kohya = family.parse_lora(kohya_path, "kohya")
    assert native.layers.keys() == kohya.layers.keys() and native.rank == 4
    assert all(name.startswith("transformer_blocks.") for name in native.layers)
    for name, delta in native.layers.items():
        theirs = kohya.layers[name]
        ours_w = delta.scale * (delta.up @ delta.down)
        their_w = theirs.scale * (theirs.up @ theirs.down)
        assert torch.allclose(ours_w, their_w, atol=1e-5), name


def test_an_sdxl_adapter_is_refused_naming_the_architecture(
    family: QwenImageFamily, tmp_path: Path
) -> None:
    from safetensors.torch import save_file

    path = tmp_path / "sdxl.safetensors"
    save_file(
        {
            "unet.down_blocks.0.attentions.0.proj_in.lora_A.weight": torch.zeros(4, 32),
            "unet.down_blocks.0.attentions.0.proj_in.lora_B.weight": torch.zeros(32, 4),
        },
        str(path),
    )
    with pytest.raises(APIError) as err:
        family.parse_lora(path, "sdxl")
    assert err.value.status == 400


async def wait_for(predicate: Any, timeout: float = 120) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while not predicate():
        assert asyncio.get_running_loop().time() < deadline, "timed out"
        await asyncio.sleep(0.005)


async def test_through_the_model_server_a_request_joining_mid_flight_equals_it_alone(
    family: QwenImageFamily, tmp_path: Path
) -> None:
    """The generic step loop, admission and LoRA bank drive this family unchanged."""
    config = qwen_config(warmup=False, loras={"dirs": [str(tmp_path)]})
    server = ModelServer(config.model_dump(), family_factory=lambda _: family)
    adapted = job("j", 21, 22, negative_prompt="fog", loras=(LoraRef(family.demo_loras[1]),))
    alone = await server.generate_pixels(adapted)
    long = asyncio.create_task(
        server.generate_pixels(job("long", 5, steps=30, prompt=PROMPTS[1]))
    )
    await wait_for(lambda: server.stats()["unet_calls"] >= 3)
    joined = await server.generate_pixels(adapted)
    assert not long.done()  # it joined a running batch and finished first
    await long
    assert any(rows > 1 for rows in server.stats()["rows_per_call_histogram"])
    assert joined.shape == (2, SIZE, SIZE, 3) and max_diff(joined, alone) <= MAX_TOLERANCE
    with pytest.raises(APIError) as err:
        await server.generate_pixels(job("dpm", 1, scheduler=SchedulerSpec("DDIMScheduler")))
    assert err.value.param == "sampler_name"


def test_previews_are_latent_sized_rgb(runner: StepRunner) -> None:
    rows = runner.admit(job("p", 3, 4), None)
    runner.tick(rows)
    preview = runner.preview(rows)
    assert preview.shape == (2, SIZE // 8, SIZE // 8, 3) and preview.dtype == np.uint8


def test_rows_share_a_call_only_on_the_same_latent_grid(runner: StepRunner) -> None:
    """Position ids come from the grid: equal token counts of another shape never mix."""

    def key(width: int, height: int) -> Any:
        j = GenerationJob("k", "p", None, (1,), width, height, STEPS, 1.0)
        return runner.admit(j, None)[0].tick_key

    assert key(64, 64) == key(64, 64)
    assert key(64, 128) != key(128, 64)  # both 32 tokens
    assert key(64, 64) != key(128, 128)


def test_text_of_different_lengths_pads_with_a_mask() -> None:
    short, long = torch.ones(1, 3, 4), torch.ones(1, 5, 4)
    embeds, mask = pad_texts([(short, None), (long, None)])
    assert embeds.shape == (2, 5, 4) and embeds[0, 3:].abs().sum() == 0
    assert mask.tolist() == [[True] * 3 + [False] * 2, [True] * 5]
    same, none = pad_texts([(short, None), (short, None)])
    assert same.shape == (2, 3, 4) and none is None


def test_the_tiny_tokenizer_drops_exactly_the_template_prefix(family: QwenImageFamily) -> None:
    pipe = family.pipe
    prefix = pipe.prompt_template_encode.split("{}")[0]
    assert len(pipe.tokenizer(prefix)["input_ids"]) == TEMPLATE_PREFIX_TOKENS
    assert pipe.prompt_template_encode_start_idx == TEMPLATE_PREFIX_TOKENS


def test_building_the_tiny_model_leaves_its_recipe_fingerprint_alone() -> None:
    """transformers rewrites nested config dicts in place; the recipe must not follow."""
    before = tiny.recipe_fingerprint()
    tiny.build_tiny_qwen_image_components()
    assert tiny.recipe_fingerprint() == before
    assert tiny.ensure_tiny_qwen_image().name.endswith(before)


@pytest.mark.parametrize(
    ("change", "param"),
    [
        ({"scheduler": SchedulerSpec("DPMSolverMultistepScheduler")}, "sampler_name"),
        (
            {"scheduler": SchedulerSpec("EulerDiscreteScheduler", (("use_karras_sigmas", True),))},
            "sampler_name",
        ),
        ({"cache_interval": 3}, "cache_interval"),
        ({"steps": 1}, "steps"),
    ],
)
def test_what_qwen_image_cannot_do_is_a_400_naming_the_field(
    family: QwenImageFamily, change: dict[str, Any], param: str
) -> None:
    with pytest.raises(APIError) as err:
        family.check(job("x", 1, **change))
    assert err.value.param == param and err.value.status == 400
    assert param in err.value.message or "sampler" in err.value.message
    family.check(job("euler", 1, scheduler=SchedulerSpec("EulerDiscreteScheduler")))
    family.check(job("plain", 1, cache_interval=1))  # an interval of 1 caches nothing


def test_new_cache_is_refused(family: QwenImageFamily) -> None:
    with pytest.raises(ValueError, match="no feature cache"):
        family.new_cache(3)
