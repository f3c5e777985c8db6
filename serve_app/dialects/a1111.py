"""The AUTOMATIC1111 web UI API dialect (what Open WebUI's ``automatic1111`` engine calls).

``POST /sdapi/v1/txt2img`` -> the canonical job; the images -> ``{images: [base64],
parameters, info}`` where ``info`` is a JSON string (A1111's ``Processed.js()``)
holding the seeds. ``GET /sdapi/v1/sd-models`` lists the configured models as
checkpoints. Defaults that A1111 takes from its UI (steps, CFG scale, sampler) come
from the model's config here, as they do in every other dialect.
"""

from __future__ import annotations

import dataclasses
import json
import secrets
import time
from collections.abc import Sequence
from typing import Any

from common.errors import APIError, check_image_count, validate
from common.job import RANDOM_SEED_LIMIT, EncodedImage, EncodeSpec, GenerationJob, assign_seeds
from common.limits import check_request
from common.model_config import ModelConfig
from serve_app.dialects.a1111_fields import check_refused, ignored_fields
from serve_app.dialects.a1111_hires import hires_settings, hires_spec, target_size
from serve_app.dialects.base import (
    Context,
    Dialect,
    Translation,
    free_size,
    log_ignored,
    new_job,
)
from serve_app.dialects.infotext import infotext, model_sha256, settings_for
from serve_app.dialects.loras import a1111_loras
from serve_app.dialects.samplers import resolve_sampler, spec_labels
from serve_app.protocol.a1111 import Img2ImgRequest, Txt2ImgRequest
from serve_app.protocol.openai import MAX_SEED

CHECKPOINT_OPTION = "sd_model_checkpoint"
# The extra_generation_params key that reports a step count clamped to max_steps.
STEPS_CLAMPED = "Steps clamped"


def parse(body: Any) -> Txt2ImgRequest:
    """Schema errors are 422, as FastAPI (and so A1111) answers them. Lax types, as
    A1111's own pydantic models are: ``"steps": "20"`` is 20 there, so it is here."""
    return validate(Txt2ImgRequest, body, kind="unprocessable")


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
    check_refused(req)
    n = req.batch_size * req.n_iter
    steps = clamped_steps(req, model)
    check_request(
        model, n=n, prompt=req.prompt, steps=steps, steps_param="steps", n_param="batch_size"
    )
    scheduler = resolve_sampler(req.sampler_name or req.sampler_index, req.scheduler)
    gen_w, gen_h = free_size(model, req.width, req.height)
    extra_overrides = sorted(set(req.override_settings) - {CHECKPOINT_OPTION})
    ignored = ignored_fields(req) + req.unknown_fields() + extra_overrides
    log_ignored(request_id, "a1111", ignored)
    # A1111 draws one base seed for -1, then image i uses base + i.
    base = secrets.randbelow(RANDOM_SEED_LIMIT) if req.seed == -1 else req.seed
    if base + n - 1 > MAX_SEED:
        raise APIError(
            "unprocessable", f"seed {base} + {n} images exceeds the largest seed", param="seed"
        )
    # <lora:name:weight> tags name adapters and are not part of the encoded text.
    prompt, negative_prompt, loras = a1111_loras(model, req.prompt, req.negative_prompt)
    job = new_job(
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
    if uses_hires(req):
        job = dataclasses.replace(job, hires=hires_spec(req, model, steps))
    return job


def uses_hires(req: Txt2ImgRequest) -> bool:
    """``enable_hr`` is a txt2img field; A1111's img2img model has none (ignored there)."""
    return req.enable_hr and not isinstance(req, Img2ImgRequest)


def output_size(req: Txt2ImgRequest) -> tuple[int, int]:
    return target_size(req) if uses_hires(req) else (req.width, req.height)


def to_encode_spec(
    req: Txt2ImgRequest, model: ModelConfig, job: GenerationJob, request_id: str
) -> EncodeSpec:
    """PNG at the requested size, each image with its A1111 ``parameters`` text."""
    width, height = output_size(req)
    return EncodeSpec(
        request_id=request_id,
        width=width,
        height=height,
        output_format="png",
        compression=None,
        response_format="b64_json",
        png_text=tuple(_infotext(req, job, model, seed) for seed in job.seeds),
    )


def _sampler_labels(req: Txt2ImgRequest, job: GenerationJob) -> tuple[str, str]:
    """The sampler and schedule as the client named them (else what actually ran)."""
    default_sampler, default_schedule = spec_labels(job.scheduler)
    sampler = req.sampler_name or req.sampler_index or default_sampler
    schedule = req.scheduler if req.scheduler else default_schedule
    return sampler, schedule[:1].upper() + schedule[1:]


def _infotext(req: Txt2ImgRequest, job: GenerationJob, model: ModelConfig, seed: int) -> str:
    """The ``parameters`` text A1111 writes for one image (its prompt keeps the
    ``<lora:...>`` tags, as A1111's does)."""
    size = (req.width, req.height)
    settings = settings_for(job, model, seed, size, _sampler_labels(req, job))
    if job.hires is not None:
        settings.update(hires_settings(req, job.hires))
    settings.update(_clamp_note(req, job))
    return infotext(req.prompt, req.negative_prompt, settings)


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
        "sampler_name": _sampler_labels(req, job)[0],
        "scheduler": _sampler_labels(req, job)[1],
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
    spec = to_encode_spec(req, model, job, ctx.request_id)
    return Translation(job, spec, lambda images: build_response(req, model, job, images))


# The model is the request's sd_model_checkpoint override; without one, the route
# uses the client's saved checkpoint (routes/a1111.py), then the default model.
TXT2IMG: Dialect[Txt2ImgRequest, dict[str, Any]] = Dialect(
    name="a1111", parse=parse, model_name=checkpoint_override, translate=translate
)
