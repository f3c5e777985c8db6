"""The AUTOMATIC1111 web UI API dialect (what Open WebUI's ``automatic1111`` engine calls).

``POST /sdapi/v1/txt2img`` -> the canonical job; the images -> ``{images: [base64],
parameters, info}`` where ``info`` is a JSON string (A1111's ``Processed.js()``)
holding the seeds. ``GET /sdapi/v1/sd-models`` lists the configured models as
checkpoints. Defaults that A1111 takes from its UI (steps, CFG scale, sampler) come
from the model's config here, as they do in every other dialect.
"""

from __future__ import annotations

import hashlib
import json
import secrets
import time
from collections.abc import Sequence
from typing import Any

from common.errors import APIError, check_image_count, validate
from common.job import RANDOM_SEED_LIMIT, EncodedImage, EncodeSpec, GenerationJob, assign_seeds
from common.limits import check_request
from common.model_config import ModelConfig
from serve_app.dialects.base import (
    Context,
    Dialect,
    Translation,
    free_size,
    log_ignored,
    new_job,
    unsupported,
)
from serve_app.dialects.loras import a1111_loras
from serve_app.dialects.samplers import resolve_sampler
from serve_app.protocol.a1111 import Txt2ImgRequest
from serve_app.protocol.openai import MAX_SEED

CHECKPOINT_OPTION = "sd_model_checkpoint"
# The extra_generation_params key that reports a step count clamped to max_steps.
STEPS_CLAMPED = "Steps clamped"
# A1111 fields accepted and ignored: they tune parts of A1111 this server does not have.
IGNORED_FIELDS = (
    "styles",
    "subseed",
    "subseed_strength",
    "seed_resize_from_h",
    "seed_resize_from_w",
    "restore_faces",
    "tiling",
    "do_not_save_samples",
    "do_not_save_grid",
    "eta",
    "s_min_uncond",
    "s_churn",
    "s_tmax",
    "s_tmin",
    "s_noise",
    "save_images",
    "force_task_id",
    "infotext",
    "comments",
    "disable_extra_networks",
    "firstpass_image",
    "refiner_checkpoint",
    "refiner_switch_at",
)


def parse(body: Any) -> Txt2ImgRequest:
    """Schema errors are 422, as FastAPI (and so A1111) answers them. Lax types, as
    A1111's own pydantic models are: ``"steps": "20"`` is 20 there, so it is here."""
    return validate(Txt2ImgRequest, body, kind="unprocessable")


def model_sha256(model: ModelConfig) -> str:
    """A stable identity hash of what a model loads (A1111 hashes the checkpoint file)."""
    ident = [model.id, model.source, model.revision, model.variant, model.unet_weights]
    return hashlib.sha256(json.dumps(ident).encode()).hexdigest()


def model_title(model: ModelConfig) -> str:
    """A1111's checkpoint title: ``name [short hash]``."""
    return f"{model.id} [{model_sha256(model)[:10]}]"


def sd_model_item(model: ModelConfig) -> dict[str, Any]:
    sha = model_sha256(model)
    return {
        "title": model_title(model),
        "model_name": model.id,
        "hash": sha[:10],
        "sha256": sha,
        "filename": model.source,
        "config": None,
    }


def checkpoint_name(value: str) -> str:
    """``"tiny-sdxl [abc]"`` or ``"tiny-sdxl.safetensors"`` -> ``"tiny-sdxl"``."""
    name = value.strip()
    if name.endswith("]") and " [" in name:
        name = name[: name.rindex(" [")]
    for ext in (".safetensors", ".ckpt"):
        name = name.removesuffix(ext)
    return name


def checkpoint_override(req: Txt2ImgRequest) -> str | None:
    value = req.override_settings.get(CHECKPOINT_OPTION)
    return checkpoint_name(value) if isinstance(value, str) and value else None


def _check_unsupported(req: Txt2ImgRequest) -> None:
    if req.enable_hr:
        raise unsupported(
            "enable_hr", "enable_hr (hires fix) is not supported by this server; send false."
        )
    if req.script_name:
        raise unsupported("script_name", "Scripts are not supported by this server.")
    if req.alwayson_scripts:
        names = sorted(req.alwayson_scripts)
        raise unsupported(
            "alwayson_scripts", f"alwayson_scripts are not supported by this server (got {names})."
        )


def clamped_steps(req: Txt2ImgRequest, model: ModelConfig) -> int:
    """``steps``, clamped to the model's ``max_steps`` rather than refused.

    A1111 clients do not show errors well: Open WebUI sends ``steps: 50`` by default,
    never checks the status, and shows a 422 body as a ``KeyError``. So on these
    routes a step count beyond the model's limit runs at the limit, and the
    response's ``info`` says so (``steps``, ``extra_generation_params``,
    ``infotexts``). The OpenAI-style dialects still answer 400 (clients there show it).
    """
    return min(req.steps or model.default_steps, model.max_steps)


def _clamp_note(req: Txt2ImgRequest, job: GenerationJob) -> dict[str, str]:
    if req.steps is None or req.steps <= job.steps:
        return {}
    return {STEPS_CLAMPED: f"{req.steps} -> {job.steps} (the model's max_steps)"}


def to_job(req: Txt2ImgRequest, model: ModelConfig, request_id: str) -> GenerationJob:
    _check_unsupported(req)
    n = req.batch_size * req.n_iter
    steps = clamped_steps(req, model)
    check_request(
        model, n=n, prompt=req.prompt, steps=steps, steps_param="steps", n_param="batch_size"
    )
    scheduler = resolve_sampler(req.sampler_name or req.sampler_index, req.scheduler)
    gen_w, gen_h = free_size(model, req.width, req.height)
    ignored = [f for f in IGNORED_FIELDS if f in req.model_fields_set]
    extra_overrides = sorted(set(req.override_settings) - {CHECKPOINT_OPTION})
    log_ignored(request_id, "a1111", ignored + req.unknown_fields() + extra_overrides)
    # A1111 draws one base seed for -1, then image i uses base + i.
    base = secrets.randbelow(RANDOM_SEED_LIMIT) if req.seed == -1 else req.seed
    if base + n - 1 > MAX_SEED:
        raise APIError(
            "unprocessable", f"seed {base} + {n} images exceeds the largest seed", param="seed"
        )
    # <lora:name:weight> tags name adapters and are not part of the encoded text.
    prompt, negative_prompt, loras = a1111_loras(model, req.prompt, req.negative_prompt)
    return new_job(
        model,
        request_id,
        prompt=prompt,
        negative_prompt=negative_prompt or None,
        seeds=assign_seeds(n, base),
        gen_size=(gen_w, gen_h),
        steps=steps,
        guidance=req.cfg_scale,
        scheduler=scheduler,
        loras=loras,
    )


def to_encode_spec(req: Txt2ImgRequest, request_id: str) -> EncodeSpec:
    return EncodeSpec(
        request_id=request_id,
        width=req.width,
        height=req.height,
        output_format="png",
        compression=None,
        response_format="b64_json",
    )


def _infotext(req: Txt2ImgRequest, job: GenerationJob, model: ModelConfig, seed: int) -> str:
    """The ``parameters`` text A1111 writes for one image."""
    lines = [req.prompt]
    if req.negative_prompt:
        lines.append(f"Negative prompt: {req.negative_prompt}")
    settings = [
        f"Steps: {job.steps}",
        f"Sampler: {req.sampler_name or req.sampler_index or 'Default'}",
        *([f"Schedule type: {req.scheduler}"] if req.scheduler else []),
        f"CFG scale: {job.guidance}",
        f"Seed: {seed}",
        f"Size: {req.width}x{req.height}",
        f"Model hash: {model_sha256(model)[:10]}",
        f"Model: {model.id}",
        *(f"{key}: {value}" for key, value in _clamp_note(req, job).items()),
    ]
    lines.append(", ".join(settings))
    return "\n".join(lines)


def build_response(
    req: Txt2ImgRequest,
    model: ModelConfig,
    job: GenerationJob,
    images: Sequence[EncodedImage],
) -> dict[str, Any]:
    check_image_count(len(images), job.n)
    seeds = list(job.seeds)
    info = {
        "prompt": req.prompt,
        "all_prompts": [req.prompt] * job.n,
        "negative_prompt": req.negative_prompt,
        "all_negative_prompts": [req.negative_prompt] * job.n,
        "seed": seeds[0],
        "all_seeds": seeds,
        "subseed": -1,
        "all_subseeds": [-1] * job.n,
        "subseed_strength": 0,
        "width": req.width,
        "height": req.height,
        "sampler_name": req.sampler_name or req.sampler_index or "Default",
        "scheduler": req.scheduler or "Automatic",
        "cfg_scale": job.guidance,
        "steps": job.steps,
        "batch_size": req.batch_size,
        "n_iter": req.n_iter,
        "restore_faces": False,
        "sd_model_name": model.id,
        "sd_model_hash": model_sha256(model)[:10],
        "seed_resize_from_w": -1,
        "seed_resize_from_h": -1,
        "denoising_strength": None,
        "extra_generation_params": _clamp_note(req, job),
        "index_of_first_image": 0,
        "infotexts": [_infotext(req, job, model, seed) for seed in seeds],
        "styles": [],
        "job_timestamp": time.strftime("%Y%m%d%H%M%S"),
        "clip_skip": 1,
        "is_using_inpainting_conditioning": False,
        "version": "imagegen-serve",
    }
    return {
        "images": [image.b64_json for image in images] if req.send_images else [],
        "parameters": req.model_dump(),
        "info": json.dumps(info),
    }


async def translate(
    req: Txt2ImgRequest, model: ModelConfig, ctx: Context
) -> Translation[dict[str, Any]]:
    job = to_job(req, model, ctx.request_id)
    spec = to_encode_spec(req, ctx.request_id)
    return Translation(job, spec, lambda images: build_response(req, model, job, images))


# The model is the request's sd_model_checkpoint override; without one, the route
# uses the client's saved checkpoint (routes/a1111.py), then the default model.
TXT2IMG: Dialect[Txt2ImgRequest, dict[str, Any]] = Dialect(
    name="a1111", parse=parse, model_name=checkpoint_override, translate=translate
)
