"""A1111's ``parameters`` text: written into every PNG, read back by ``png-info``.

A1111 stores its generation parameters as one PNG text chunk named ``parameters``
(``modules/processing.py: create_infotext``)::

    a lighthouse <lora:demo-1:0.8>
    Negative prompt: blurry
    Steps: 20, Sampler: Euler, Schedule type: Karras, CFG scale: 5.0, Seed: 7, Size: 512x512,
    Model hash: 0123456789, Model: tiny-sdxl, Lora hashes: "demo-1: 0123456789ab"

(the settings are one line in the file).
Other tools (A1111's PNG Info tab, civitai, image browsers) parse it back. Here every
dialect's PNG outputs carry it (the encoder writes ``EncodeSpec.png_text``), and
:func:`parse_infotext` is A1111's ``parse_generation_parameters`` for ``png-info``.
Hashes are of identities (model id and source, adapter name), not of files.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import re
from typing import Any

from common.job import EncodeSpec, GenerationJob, LoraRef
from common.model_config import ModelConfig
from serve_app.dialects.samplers import spec_labels

PARAMETERS_KEY = "parameters"
NEGATIVE = "Negative prompt:"
# One "Key: value" pair of the settings line; values may be JSON-quoted (A1111's re_param).
_PARAM = re.compile(r'\s*(\w[\w \-/]+):\s*("(?:\\.|[^\\"])+"|[^,]*)(?:,|$)')
_SIZE = re.compile(r"^(\d+)x(\d+)$")


def model_sha256(model: ModelConfig) -> str:
    """A stable identity hash of what a model loads (A1111 hashes the checkpoint file)."""
    ident = [model.id, model.source, model.revision, model.variant, model.unet_weights]
    return hashlib.sha256(json.dumps(ident).encode()).hexdigest()


def lora_hash(name: str) -> str:
    return hashlib.sha256(name.encode()).hexdigest()[:12]


def _quote(value: str) -> str:
    return json.dumps(value) if any(c in value for c in ',:"\n') else value


def infotext(
    prompt: str,
    negative_prompt: str | None,
    settings: dict[str, object],
) -> str:
    """The three parts: prompt, ``Negative prompt: ...`` (when set), the settings line."""
    lines = [prompt]
    if negative_prompt:
        lines.append(f"{NEGATIVE} {negative_prompt}")
    lines.append(", ".join(f"{key}: {_quote(str(value))}" for key, value in settings.items()))
    return "\n".join(lines)


def settings_for(
    job: GenerationJob,
    model: ModelConfig,
    seed: int,
    size: tuple[int, int],
    sampler: tuple[str, str] | None = None,
) -> dict[str, object]:
    """The settings line of one image: A1111's keys, in A1111's order."""
    sampler_name, schedule = sampler or spec_labels(job.scheduler)
    settings: dict[str, object] = {
        "Steps": job.steps,
        "Sampler": sampler_name,
        "Schedule type": schedule,
        "CFG scale": job.guidance,
        "Seed": seed,
        "Size": f"{size[0]}x{size[1]}",
        "Model hash": model_sha256(model)[:10],
        "Model": model.id,
    }
    if job.strength is not None:
        settings["Denoising strength"] = job.strength
    if job.loras:
        settings["Lora hashes"] = ", ".join(
            f"{ref.name}: {lora_hash(ref.name)}" for ref in job.loras
        )
    return settings


def lora_tags(loras: tuple[LoraRef, ...]) -> str:
    return "".join(f" <lora:{ref.name}:{ref.scale:g}>" for ref in loras)


def with_png_text(spec: EncodeSpec, job: GenerationJob, model: ModelConfig) -> EncodeSpec:
    """``spec`` with one ``parameters`` text per image, for PNG outputs that have none
    yet (A1111's dialect writes its own with the names its client sent). Adapters show
    as ``<lora:name:scale>`` tags, which is how A1111 prompts name them."""
    if spec.output_format != "png" or spec.png_text:
        return spec
    prompt = job.prompt + lora_tags(job.loras)
    size = (spec.width, spec.height)
    texts = tuple(
        infotext(prompt, job.negative_prompt, settings_for(job, model, seed, size))
        for seed in job.seeds
    )
    return dataclasses.replace(spec, png_text=texts)


def parse_infotext(text: str) -> dict[str, Any]:
    """A1111's ``parse_generation_parameters``: ``Prompt``, ``Negative prompt`` and each
    setting; ``Size`` becomes ``Size-1`` and ``Size-2`` as there."""
    *lines, last = text.strip().split("\n") if text.strip() else [""]
    if len(_PARAM.findall(last)) < 3:
        lines.append(last)
        last = ""
    prompt, negative, in_negative = [], [], False
    for line in lines:
        if line.startswith(NEGATIVE):
            in_negative, line = True, line.removeprefix(NEGATIVE).strip()
        (negative if in_negative else prompt).append(line)
    result: dict[str, Any] = {"Prompt": "\n".join(prompt), "Negative prompt": "\n".join(negative)}
    for key, value in _PARAM.findall(last):
        if value.startswith('"') and value.endswith('"'):
            with contextlib.suppress(json.JSONDecodeError):
                value = json.loads(value)
        size = _SIZE.match(value)
        if size:
            result[f"{key}-1"], result[f"{key}-2"] = size.group(1), size.group(2)
        else:
            result[key] = value
    return result
