"""A1111 txt2img -> canonical job, samplers -> diffusers schedulers, and the response."""

from __future__ import annotations

import json
from typing import Any

import pytest

from common.errors import APIError
from common.job import EncodedImage, SchedulerSpec
from serve_app.dialects import a1111
from serve_app.dialects.samplers import SAMPLERS, known_sampler_names, resolve_sampler
from tests.support.models import dialect_model

MODEL = dialect_model(max_images_per_request=8, batching={"max_batch_size": 16})


def translate(**body: Any):
    req = a1111.parse({"prompt": "a cat", **body})
    return req, a1111.to_job(req, MODEL, "req-1")


def test_open_webui_payload() -> None:
    """Exactly what Open WebUI's automatic1111 engine posts (routers/images.py)."""
    req, job = translate(batch_size=2, width=512, height=512, steps=10, negative_prompt="fog")
    assert (job.n, job.steps, job.negative_prompt, job.guidance) == (2, 10, "fog", 5.0)
    assert (job.gen_width, job.gen_height) == (64, 64)
    assert job.scheduler is None  # no sampler sent: the model's own scheduler
    assert job.seeds[1] == job.seeds[0] + 1 and 0 <= job.seeds[0] < 2**32


def test_seed_batch_size_and_n_iter() -> None:
    _, job = translate(seed=100, batch_size=2, n_iter=3, cfg_scale=7.0)
    assert job.seeds == (100, 101, 102, 103, 104, 105) and job.guidance == 7.0


def test_empty_negative_prompt_means_none() -> None:
    assert translate(negative_prompt="")[1].negative_prompt is None


@pytest.mark.parametrize(
    "sampler,scheduler,expected",
    [
        ("Euler", None, SchedulerSpec("EulerDiscreteScheduler")),
        ("Euler a", None, SchedulerSpec("EulerAncestralDiscreteScheduler")),
        ("DPM++ 2M", None, SchedulerSpec("DPMSolverMultistepScheduler")),
        (
            "DPM++ 2M Karras",
            None,
            SchedulerSpec("DPMSolverMultistepScheduler", (("use_karras_sigmas", True),)),
        ),
        (
            "DPM++ 2M",
            "Karras",
            SchedulerSpec("DPMSolverMultistepScheduler", (("use_karras_sigmas", True),)),
        ),
        (
            "DPM++ 2M SDE Karras",
            None,
            SchedulerSpec(
                "DPMSolverMultistepScheduler",
                (("algorithm_type", "sde-dpmsolver++"), ("use_karras_sigmas", True)),
            ),
        ),
        ("DDIM", None, SchedulerSpec("DDIMScheduler")),
        ("LMS", None, SchedulerSpec("LMSDiscreteScheduler")),
        (
            "UniPC",
            "sgm_uniform",
            SchedulerSpec("UniPCMultistepScheduler", (("timestep_spacing", "trailing"),)),
        ),
        ("k_euler_a", None, SchedulerSpec("EulerAncestralDiscreteScheduler")),
        (None, "Automatic", None),
        (None, "Karras", SchedulerSpec("EulerDiscreteScheduler", (("use_karras_sigmas", True),))),
    ],
)
def test_sampler_mapping(
    sampler: str | None, scheduler: str | None, expected: SchedulerSpec | None
) -> None:
    assert resolve_sampler(sampler, scheduler) == expected


def test_every_listed_sampler_name_resolves() -> None:
    """Each listed name is its sampler's class and options, plus its suffix's schedule."""
    expected: dict[str, SchedulerSpec] = {}
    for sampler in SAMPLERS.values():
        suffixes = {"": {}}
        if sampler.sigma_schedules:
            suffixes |= {
                " Karras": {"use_karras_sigmas": True},
                " Exponential": {"use_exponential_sigmas": True},
            }
        for suffix, schedule in suffixes.items():
            options = tuple(sorted({**sampler.options, **schedule}.items()))
            expected[sampler.name + suffix] = SchedulerSpec(sampler.class_name, options)
    assert sorted(known_sampler_names()) == sorted(expected)
    for name, spec in expected.items():
        assert resolve_sampler(name, None) == spec, name
    assert set(SAMPLERS) <= set(known_sampler_names())


def test_unknown_sampler_lists_the_known_ones() -> None:
    with pytest.raises(APIError) as info:
        translate(sampler_name="DPM fast")
    assert info.value.status == 400 and info.value.param == "sampler_name"
    assert "DPM++ 2M Karras" in info.value.message and "UniPC" in info.value.message
    body = info.value.a1111_body()
    assert set(body) == {"error", "detail", "body", "errors"}


@pytest.mark.parametrize(
    "body,status",
    [
        ({"batch_size": "two"}, 422),
        ({"seed": -2}, 422),
        ({"width": 16}, 422),
        ({"steps": 0}, 422),
        ({"prompt": ["a", "b"]}, 422),
        ({"batch_size": 3, "n_iter": 3}, 400),  # 9 images, the model allows 8
        ({"width": 3000, "height": 3000}, 400),
        ({"sampler_name": "Euler a", "scheduler": "Karras"}, 400),
        ({"scheduler": "align_your_steps"}, 400),
        ({"enable_hr": True, "hr_upscaler": "4x-UltraSharp"}, 400),
        ({"alwayson_scripts": {"controlnet": {"args": [{"image": "AA==", "model": "x"}]}}}, 400),
        ({"restore_faces": True}, 400),
        ({"script_name": "x/y/z plot"}, 400),
    ],
)
def test_bad_input_gets_a1111_status_and_shape(body: dict[str, Any], status: int) -> None:
    with pytest.raises(APIError) as info:
        translate(**body)
    assert info.value.status == status
    shape = info.value.a1111_body()
    assert shape["detail"] and shape["errors"].startswith(str(status))
    assert shape["error"] == ("RequestValidationError" if status == 422 else "HTTPException")


@pytest.mark.parametrize("steps,ran", [(50, 50), (51, 50), (500, 50), (None, 20)])
def test_steps_beyond_max_steps_are_clamped_and_reported(steps: int | None, ran: int) -> None:
    """Open WebUI sends steps=50 whatever the model: it runs at max_steps, info says so."""
    req, job = translate(**({} if steps is None else {"steps": steps}))
    assert job.steps == ran
    body = a1111.build_response(req, MODEL, job, [EncodedImage(b64_json="AA==")])
    info = json.loads(body["info"])
    assert info["steps"] == ran
    clamped = steps is not None and steps > ran
    expected = {a1111.STEPS_CLAMPED: f"{steps} -> {ran} (the model's max_steps)"} if clamped else {}
    assert info["extra_generation_params"] == expected
    assert (f"{a1111.STEPS_CLAMPED}: {steps} -> {ran}" in info["infotexts"][0]) == clamped
    assert f"Steps: {ran}," in info["infotexts"][0]


def test_a1111_types_are_lax_as_a1111s_own_models() -> None:
    """A1111's FastAPI models coerce ("4" is 4, "true" is True); so do these."""
    req, job = translate(steps="4", batch_size="2", cfg_scale="3", send_images="false")
    assert (job.steps, job.n, job.guidance, req.send_images) == (4, 2, 3.0, False)


def test_response_carries_seeds_in_info() -> None:
    req, job = translate(seed=9, batch_size=2, sampler_name="Euler a")
    body = a1111.build_response(
        req, MODEL, job, [EncodedImage(b64_json="AA=="), EncodedImage(b64_json="AQ==")]
    )
    assert body["images"] == ["AA==", "AQ=="]
    assert body["parameters"]["prompt"] == "a cat" and body["parameters"]["batch_size"] == 2
    info = json.loads(body["info"])
    assert (info["seed"], info["all_seeds"]) == (9, [9, 10])
    assert info["sampler_name"] == "Euler a" and info["sd_model_name"] == "tiny"
    assert "Seed: 10" in info["infotexts"][1]


def test_checkpoint_names() -> None:
    title = a1111.model_title(MODEL)
    assert title.startswith("tiny [") and len(a1111.model_sha256(MODEL)) == 64
    for value in (title, "tiny", "tiny.safetensors"):
        assert a1111.checkpoint_name(value) == "tiny"
    item = a1111.sd_model_item(MODEL)
    assert set(item) == {"title", "model_name", "hash", "sha256", "filename", "config"}
