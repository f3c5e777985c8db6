"""A1111's whole request model: nulls, honoured/ignored/refused fields, always-on
script blocks, and the ``parameters`` text written into PNGs and read back."""

from __future__ import annotations

import io
from typing import Any

import numpy as np
import pytest
from PIL import Image

from common.errors import APIError
from common.job import LoraRef
from deployments.encoder.codec import encode_image
from serve_app.dialects import a1111, a1111_img2img
from serve_app.dialects.a1111_fields import active_scripts, ignored_fields
from serve_app.dialects.infotext import parse_infotext, with_png_text
from serve_app.protocol.a1111 import Img2ImgRequest, Txt2ImgRequest
from tests.support.models import dialect_model

MODEL = dialect_model(max_images_per_request=8)

# What webuiapi / SillyTavern / Krita send: A1111's full model, nulls included.
FULL_BODY: dict[str, Any] = {
    "prompt": "a cat",
    "negative_prompt": "",
    "styles": [],
    "seed": -1,
    "subseed": -1,
    "subseed_strength": 0.0,
    "seed_resize_from_h": -1,
    "seed_resize_from_w": -1,
    "sampler_name": "Euler a",
    "sampler_index": "Euler a",
    "scheduler": "automatic",
    "batch_size": 1,
    "n_iter": 1,
    "steps": 10,
    "cfg_scale": 7.0,
    "width": 512,
    "height": 512,
    "restore_faces": None,
    "tiling": None,
    "do_not_save_samples": False,
    "do_not_save_grid": False,
    "eta": 1.0,
    "denoising_strength": None,
    "firstphase_width": 0,
    "firstphase_height": 0,
    "s_min_uncond": None,
    "s_churn": None,
    "s_tmax": None,
    "s_tmin": None,
    "s_noise": None,
    "override_settings": {"sd_model_checkpoint": None, "CLIP_stop_at_last_layers": 2},
    "override_settings_restore_afterwards": True,
    "refiner_checkpoint": None,
    "refiner_switch_at": None,
    "disable_extra_networks": False,
    "firstpass_image": None,
    "comments": None,
    "enable_hr": False,
    "hr_scale": 2.0,
    "hr_upscaler": None,
    "hr_second_pass_steps": 0,
    "hr_resize_x": 0,
    "hr_resize_y": 0,
    "hr_checkpoint_name": None,
    "hr_sampler_name": None,
    "hr_scheduler": None,
    "hr_prompt": "",
    "hr_negative_prompt": "",
    "force_task_id": None,
    "script_name": None,
    "script_args": [],
    "send_images": True,
    "save_images": False,
    "alwayson_scripts": {
        "ControlNet": {"args": []},
        "ADetailer": {"args": [False]},
        "Regional Prompter": {"args": [{"enabled": False, "mode": "Matrix"}]},
        "Seed": {"args": [-1, False, -1, 0, 0, 0]},
    },
    "infotext": None,
}


def test_every_a1111_field_with_nulls_and_disabled_blocks_is_accepted() -> None:
    req = a1111.parse(FULL_BODY)
    job = a1111.to_job(req, MODEL, "r")
    assert job.steps == 10 and job.guidance == 7.0
    assert "eta" in ignored_fields(req) and "prompt" not in ignored_fields(req)
    assert req.model_extra == {}  # nothing fell outside the model


def test_the_model_holds_every_a1111_field() -> None:
    # StableDiffusionProcessingTxt2Img/Img2Img's arguments plus the API's additions.
    txt2img = {"hr_cfg", "hr_additional_modules", "seed_enable_extras", *FULL_BODY}
    img2img = {"init_images", "resize_mode", "image_cfg_scale", "mask", "mask_blur_x",
               "mask_blur_y", "mask_blur", "mask_round", "inpainting_fill", "inpaint_full_res",
               "inpaint_full_res_padding", "inpainting_mask_invert", "initial_noise_multiplier",
               "latent_mask", "include_init_images"}  # fmt: skip
    assert txt2img <= set(Txt2ImgRequest.model_fields)
    assert img2img <= set(Img2ImgRequest.model_fields)


@pytest.mark.parametrize(
    "body,param",
    [
        ({"restore_faces": True}, "restore_faces"),
        ({"script_name": "x/y/z plot"}, "script_name"),
        ({"enable_hr": True, "hr_upscaler": "ESRGAN_4x"}, "hr_upscaler"),
        ({"enable_hr": True, "hr_checkpoint_name": "other [abc]"}, "hr_checkpoint_name"),
        ({"enable_hr": True, "hr_scale": 8.0}, "hr_scale"),
        ({"enable_hr": True, "denoising_strength": 0.01}, "denoising_strength"),
        (
            {"alwayson_scripts": {"ControlNet": {"args": [{"enabled": True, "image": "AA=="}]}}},
            "alwayson_scripts.ControlNet",
        ),
        (
            {"alwayson_scripts": {"ADetailer": {"args": [True, {"ad_model": "face"}]}}},
            "alwayson_scripts.ADetailer",
        ),  # fmt: skip
    ],
)
def test_a_setting_that_cannot_be_honoured_is_a_400_naming_it(
    body: dict[str, Any], param: str
) -> None:
    with pytest.raises(APIError) as info:
        a1111.to_job(a1111.parse({"prompt": "x", **body}), MODEL, "r")
    assert (info.value.status, info.value.param) == (400, param)


@pytest.mark.parametrize(
    "block,active",
    [
        ({"args": []}, False),
        ({}, False),
        ({"args": [False, {"x": 1}]}, False),
        ({"args": [{"enabled": False, "image": "AA=="}]}, False),
        ({"args": [{}, {"enabled": True}]}, False),
        ({"args": [{"enabled": True, "image": "AA=="}]}, True),
        ({"args": [True]}, True),
    ],
)
def test_always_on_blocks(block: dict[str, Any], active: bool) -> None:
    assert active_scripts({"Ext": block}) == (["Ext"] if active else [])


def test_nulls_in_img2img_are_defaults() -> None:
    req = a1111_img2img.parse({"init_images": ["AA=="], "denoising_strength": None, "mask": None})
    assert (req.denoising_strength, req.mask) == (0.75, None)


def test_a1111_png_text_round_trips_through_png_info() -> None:
    req = a1111.parse({"prompt": "a cat, sitting: \"so\"", "negative_prompt": "fog",
                       "seed": 7, "sampler_name": "Euler", "scheduler": "karras",
                       "width": 96, "height": 64, "steps": 9})  # fmt: skip
    job = a1111.to_job(req, dialect_model(), "r")
    spec = a1111.to_encode_spec(req, dialect_model(), job, "r")
    [text] = spec.png_text
    png = encode_image(np.zeros((8, 8, 3), np.uint8), 96, 64, "png", None, png_text=text)
    read = Image.open(io.BytesIO(png)).info["parameters"]
    assert read == text
    params = parse_infotext(read)
    assert params["Prompt"] == 'a cat, sitting: "so"'
    assert params["Negative prompt"] == "fog"
    assert (params["Steps"], params["Sampler"], params["Schedule type"]) == ("9", "Euler", "Karras")
    assert (params["Seed"], params["Size-1"], params["Size-2"]) == ("7", "96", "64")
    assert params["Model"] == dialect_model().id


def test_every_dialect_gets_png_text_and_other_formats_none() -> None:
    from serve_app.dialects.openai import parse_generate, to_encode_spec, to_job

    req = parse_generate({"prompt": "a fox", "seed": 3, "n": 2})
    job = to_job(req, MODEL, "r")
    spec = with_png_text(to_encode_spec(req, MODEL, "r", None), job, MODEL)
    assert [parse_infotext(t)["Seed"] for t in spec.png_text] == ["3", "4"]
    assert parse_infotext(spec.png_text[0])["Sampler"] == "Default"
    webp = parse_generate({"prompt": "a fox", "output_format": "webp"})
    assert with_png_text(to_encode_spec(webp, MODEL, "r", None), job, MODEL).png_text == ()


def test_adapters_show_as_lora_tags_in_other_dialects() -> None:
    from dataclasses import replace

    from serve_app.dialects.openai import parse_generate, to_encode_spec, to_job

    req = parse_generate({"prompt": "a fox", "seed": 3})
    job = replace(to_job(req, MODEL, "r"), loras=(LoraRef("demo-2", 0.8),))
    [text] = with_png_text(to_encode_spec(req, MODEL, "r", None), job, MODEL).png_text
    params = parse_infotext(text)
    assert params["Prompt"] == "a fox <lora:demo-2:0.8>"
    assert params["Lora hashes"].startswith("demo-2: ")


def test_png_info_reads_parameters_and_other_chunks() -> None:
    from PIL.PngImagePlugin import PngInfo

    from serve_app.dialects.a1111_info import png_info

    meta = PngInfo()
    meta.add_text("parameters", "a fox\nSteps: 4, Sampler: Euler, Seed: 9, Size: 64x32")
    meta.add_text("Software", "test")
    buffer = io.BytesIO()
    Image.new("RGB", (4, 4)).save(buffer, format="PNG", pnginfo=meta)
    result = png_info(buffer.getvalue())
    assert result["info"].startswith("a fox\nSteps: 4")
    assert result["items"] == {"Software": "test"}
    assert result["parameters"]["Seed"] == "9" and result["parameters"]["Size-1"] == "64"
    with pytest.raises(APIError) as info:
        png_info(b"not an image")
    assert (info.value.status, info.value.param) == (400, "image")


@pytest.mark.parametrize(
    "body,target,upscaler",
    [
        ({"hr_scale": 2.0}, (256, 192), ("latent", "bilinear", False)),
        ({"hr_resize_x": 200, "hr_upscaler": "Lanczos"}, (200, 150),
         ("lanczos", "bilinear", False)),
        ({"hr_resize_y": 300, "hr_upscaler": "latent (nearest-exact)"}, (400, 300),
         ("latent", "nearest-exact", False)),
        ({"hr_resize_x": 160, "hr_resize_y": 96, "hr_upscaler": None}, (160, 96),
         ("latent", "bilinear", False)),
        ({"hr_scale": 2.0, "hr_upscaler": "Latent (bicubic antialiased)"}, (256, 192),
         ("latent", "bicubic", True)),
        ({"hr_scale": 2.0, "hr_upscaler": "Latent (antialiased)"}, (256, 192),
         ("latent", "bilinear", True)),
    ],
)  # fmt: skip
def test_hires_fix_job_and_output_size(
    body: dict[str, Any], target: tuple[int, int], upscaler: tuple[str, str, bool]
) -> None:
    """Each of A1111's Latent modes is its interpolate mode and antialias flag."""
    req = a1111.parse({"prompt": "x", "width": 128, "height": 96, "steps": 10,
                       "enable_hr": True, "hr_second_pass_steps": 6, **body})  # fmt: skip
    job = a1111.to_job(req, MODEL, "r")
    assert job.hires is not None
    assert (job.hires.upscaler, job.hires.latent_mode, job.hires.antialias) == upscaler
    assert (job.hires.steps, job.hires.strength) == (6, 0.7)
    assert job.hires.width >= job.gen_width and job.hires.height >= job.gen_height
    spec = a1111.to_encode_spec(req, MODEL, job, "r")
    assert (spec.width, spec.height) == target
    assert "Hires steps: 6" in spec.png_text[0] and "Denoising strength: 0.7" in spec.png_text[0]


def test_hires_is_ignored_on_img2img_and_off_by_default() -> None:
    assert a1111.to_job(a1111.parse({"prompt": "x"}), MODEL, "r").hires is None
    req = a1111_img2img.parse({"init_images": ["AA=="], "enable_hr": True})
    assert "enable_hr" in ignored_fields(req)


def test_a_boolean_for_a_number_is_refused_not_coerced() -> None:
    """Lax types stay (``"20"`` is 20 steps), but ``true`` is never one step."""
    from serve_app.protocol.a1111 import Img2ImgRequest, Txt2ImgRequest

    assert Txt2ImgRequest.model_validate({"steps": "20"}).steps == 20
    for model, field in ((Txt2ImgRequest, "steps"), (Img2ImgRequest, "denoising_strength")):
        with pytest.raises(ValueError, match=f"{field} must be a number"):
            model.model_validate({field: True})
    assert Txt2ImgRequest.model_validate({"seed_enable_extras": False}).seed_enable_extras is False
