"""The flux family against diffusers' own FLUX pipelines, on the tiny built-in weights.

Faithfulness: the step loop's rows (joined at different steps, sharing transformer
calls) give what ``FluxPipeline``, ``FluxImg2ImgPipeline`` and ``FluxInpaintPipeline``
give for the same prompt, seed and steps, within 1/255 mean. Then what only the
family decides: guidance through the embedding, per-row LoRA, the 400s.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
import torch
from PIL import Image

from common.errors import APIError
from common.job import GenerationJob, LoraRef, SchedulerSpec
from common.model_config import ModelConfig
from deployments.model.families.flux.family import FluxFamily
from deployments.model.lora.bank import bank_for
from deployments.model.scheduler.runner import StepRunner
from tests.support.family_images import half_mask, init_image, mean_diff, to_uint8

SIZE = 64
STEPS = 4
MEAN_TOLERANCE = 1.0  # uint8 levels, mean over the image


def flux_config(**overrides: Any) -> ModelConfig:
    base = {"id": "tiny-flux", "source": "builtin:tiny-flux", "torch_threads": 2}
    return ModelConfig.model_validate({**base, **overrides})


@pytest.fixture(scope="module")
def family() -> FluxFamily:
    return FluxFamily(flux_config())


@pytest.fixture(scope="module")
def runner(family: FluxFamily) -> StepRunner:
    bank = bank_for(flux_config(), family.denoiser, family.parse_lora, family.demo_loras)
    assert bank is not None
    bank.ensure(tuple(LoraRef(name) for name in family.demo_loras))
    return StepRunner(family, bank.rows)


def job(rid: str, seed: int, guidance: float = 3.5, **kw: Any) -> GenerationJob:
    return GenerationJob(rid, "a lighthouse", None, (seed,), SIZE, SIZE, STEPS, guidance, **kw)










def run_staggered(runner: StepRunner, jobs: list[GenerationJob]) -> list[np.ndarray]:
    """Admit one job per tick, so rows at different steps share transformer calls."""
    pending, live, done = list(jobs), [], {}
    while pending or live:
        if pending:
            j = pending.pop(0)
            live += [(j.request_id, row) for row in runner.admit(j, None)]
        runner.tick([row for _, row in live])
        for rid, row in [item for item in live if item[1].done]:
            done[rid] = runner.decode([row])[0][0]
        live = [item for item in live if not item[1].done]
    return [done[j.request_id] for j in jobs]


def reference(family: FluxFamily, j: GenerationJob) -> np.ndarray:
    pipe = family.pipelines.for_mode(j.mode)
    kwargs: dict[str, Any] = {}
    if j.mode != "txt2img":
        kwargs = {"image": Image.fromarray(init_image()), "strength": j.strength}
    if j.mode == "inpaint":
        kwargs["mask_image"] = Image.fromarray(half_mask(), mode="L")
    with torch.inference_mode():
        out = pipe(
            prompt=j.prompt,
            height=SIZE,
            width=SIZE,
            num_inference_steps=j.steps,
            guidance_scale=j.guidance,
            generator=torch.Generator("cpu").manual_seed(j.seeds[0]),
            output_type="np",
            max_sequence_length=family.max_sequence_length,
            **kwargs,
        )
    return to_uint8(out.images)[0]


MODES = [
    ("txt2img", {}),
    ("img2img", {"strength": 0.75}),
    ("inpaint", {"strength": 1.0}),
]


@pytest.mark.parametrize(("mode", "extra"), MODES, ids=[m for m, _ in MODES])
def test_rows_joined_mid_flight_equal_the_diffusers_pipeline(
    family: FluxFamily, runner: StepRunner, mode: str, extra: dict[str, Any]
) -> None:
    image_args: dict[str, Any] = {}
    if mode != "txt2img":
        image_args = {"mode": mode, "init_image": init_image(), **extra}
    if mode == "inpaint":
        image_args["mask"] = half_mask()
    jobs = [job(f"r{seed}", seed, guidance=2.0 + seed, **image_args) for seed in (1, 2, 3)]
    ours = run_staggered(runner, jobs)
    for j, image in zip(jobs, ours, strict=True):
        assert image.shape == (SIZE, SIZE, 3)
        assert mean_diff(image, reference(family, j)) <= MEAN_TOLERANCE, j.request_id


def test_inpaint_keeps_the_outside_of_the_mask(runner: StepRunner) -> None:
    j = job("in", 5, mode="inpaint", init_image=init_image(), mask=half_mask(), strength=1.0)
    (image,) = run_staggered(runner, [j])
    plain = run_staggered(runner, [job("t", 5)])[0]
    # The left half comes from the init latents, the right half is generated.
    left = mean_diff(image[:, : SIZE // 4], init_image()[:, : SIZE // 4])
    assert left < mean_diff(plain[:, : SIZE // 4], init_image()[:, : SIZE // 4])


def test_guidance_goes_through_the_embedding_and_changes_the_image(runner: StepRunner) -> None:
    low, high = run_staggered(runner, [job("lo", 9, guidance=1.0), job("hi", 9, guidance=6.0)])
    assert mean_diff(low, high) > 1.0
    rows = runner.admit(job("one", 9), None)
    assert [row.passes for row in rows] == [1]  # no second CFG pass


def test_mixed_lora_rows_equal_each_row_alone(family: FluxFamily, runner: StepRunner) -> None:
    names = family.demo_loras
    jobs = [job(f"l{i}", 11, loras=(LoraRef(names[i], 1.0),)) for i in range(2)]
    jobs.append(job("plain", 11))
    together = run_staggered(runner, jobs)
    for j, image in zip(jobs, together, strict=True):
        alone = run_staggered(runner, [j])[0]
        assert mean_diff(image, alone) <= MEAN_TOLERANCE, j.request_id
    assert mean_diff(together[0], together[2]) > 1.0  # the adapter does something


def test_previews_are_latent_sized_rgb(runner: StepRunner) -> None:
    rows = runner.admit(job("p", 3), None)
    runner.tick(rows)
    preview = runner.preview(rows)
    assert preview.shape == (1, SIZE // 8, SIZE // 8, 3) and preview.dtype == np.uint8


@pytest.mark.parametrize(
    ("change", "param"),
    [
        ({"scheduler": SchedulerSpec("DPMSolverMultistepScheduler")}, "sampler_name"),
        ({"cache_interval": 3}, "cache_interval"),
    ],
)
def test_what_flux_cannot_do_is_a_400_naming_the_field(
    family: FluxFamily, change: dict[str, Any], param: str
) -> None:
    with pytest.raises(APIError) as err:
        family.check(job("x", 1, **change))
    assert err.value.param == param
    family.check(job("euler", 1, scheduler=SchedulerSpec("EulerDiscreteScheduler")))
