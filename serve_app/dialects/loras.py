"""LoRA adapters in each dialect's request shape -> the job's ``LoraRef`` tuple.

| dialect | shape | error ``param`` |
|---|---|---|
| Together | ``image_loras: [{"path", "scale"}]`` | ``image_loras[i].path`` |
| OpenAI, imagine | ``loras: [{"name", "scale"}]`` (``extra_body``) | ``loras[i].name`` |
| A1111 | ``<lora:name:weight>`` in ``prompt`` | ``prompt`` / ``negative_prompt`` |

Everything a request can get wrong without loading the file is checked here, so the
400 names the request's own field: the count (``loras.max_per_request``), the scale
range, the name (a file stem the model's LoRA folders hold, or a hub reference the
model may download). What only loading shows (a corrupt file, another architecture)
comes back from the replica as a 400 with ``param`` ``loras[i]``.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Sequence
from typing import Any

from common.errors import invalid
from common.job import LoraRef
from common.model_config import ModelConfig
from storage.lora_files import LoraLookupError, registry_for

# A1111's extra-network syntax: <lora:name>, <lora:name:weight>, <lora:name:te:unet>.
A1111_TAG = re.compile(r"<lora:([^:>]+)(?::([^:>]*))?(?::([^:>]*))?>", re.IGNORECASE)


def check_refs(
    model: ModelConfig,
    items: Sequence[tuple[str, float]],
    name_params: Sequence[str],
    scale_params: Sequence[str],
    list_param: str,
    labels: Sequence[str] | None = None,
) -> tuple[LoraRef, ...]:
    """Check ``(name, scale)`` pairs against the model; each error names its field
    (and starts with ``labels[i]``, e.g. the A1111 tag, where given)."""
    config = model.loras
    if not items:
        return ()
    if not config.enabled:
        raise invalid(
            f"The model '{model.id}' does not take LoRA adapters.",
            param=list_param,
            code="lora_disabled",
        )
    if len(items) > config.max_per_request:
        raise invalid(
            f"{len(items)} LoRA adapters requested; at most {config.max_per_request} per request.",
            param=list_param,
            code="too_many_loras",
        )
    registry = registry_for(model)
    refs = []
    for index, ((name, scale), name_param, scale_param) in enumerate(
        zip(items, name_params, scale_params, strict=True)
    ):
        label = f"{labels[index]}: " if labels else ""
        if not math.isfinite(scale) or not config.min_scale <= scale <= config.max_scale:
            raise invalid(
                f"{label}Invalid value for '{scale_param}': LoRA scale {scale} is outside "
                f"[{config.min_scale}, {config.max_scale}].",
                param=scale_param,
                code="invalid_lora_scale",
            )
        try:
            registry.check(name, urls_ok=True)
        except LoraLookupError as exc:
            raise invalid(f"{label}{exc}", param=name_param, code=exc.code) from None
        refs.append(LoraRef(name=name, scale=float(scale)))
    return tuple(refs)


def _pairs(value: Any, list_param: str, name_key: str) -> list[tuple[str, float]]:
    """``[{name_key: str, "scale": number}]`` -> pairs; a wrong shape is a 400."""
    if value is None:
        return []
    if not isinstance(value, list):
        raise invalid(f"'{list_param}' must be a list of objects.", param=list_param)
    pairs = []
    for index, item in enumerate(value):
        where = f"{list_param}[{index}]"
        if not isinstance(item, dict):
            raise invalid(f"'{where}' must be an object.", param=where)
        name = item.get(name_key)
        if not isinstance(name, str) or not name.strip():
            raise invalid(
                f"Missing required parameter: '{where}.{name_key}'.",
                param=f"{where}.{name_key}",
                code="missing_required_parameter",
            )
        scale = item.get("scale", 1.0)
        if isinstance(scale, bool) or not isinstance(scale, int | float):
            raise invalid(
                f"Invalid value for '{where}.scale': must be a number (got {scale!r}).",
                param=f"{where}.scale",
            )
        pairs.append((name.strip(), float(scale)))
    return pairs


def together_loras(value: Any, model: ModelConfig) -> tuple[LoraRef, ...]:
    """Together's ``image_loras: [{"path", "scale"}]`` (the together SDK's ``ImageLora``)."""
    pairs = _pairs(value, "image_loras", "path")
    n = range(len(pairs))
    return check_refs(
        model,
        pairs,
        [f"image_loras[{i}].path" for i in n],
        [f"image_loras[{i}].scale" for i in n],
        "image_loras",
    )


def extension_loras(value: Any, model: ModelConfig) -> tuple[LoraRef, ...]:
    """The OpenAI / imagine extension field ``loras: [{"name", "scale"}]``."""
    pairs = _pairs(value, "loras", "name")
    n = range(len(pairs))
    return check_refs(
        model, pairs, [f"loras[{i}].name" for i in n], [f"loras[{i}].scale" for i in n], "loras"
    )


def _tag_weight(raw: str | None, tag: str, param: str) -> float:
    if raw is None or raw == "":
        return 1.0
    try:
        return float(raw)
    except ValueError:
        raise invalid(
            f"LoRA tag {tag} in '{param}' has weight {raw!r}, which is not a number.",
            param=param,
            code="invalid_lora_scale",
        ) from None


def strip_tags(text: str, param: str) -> tuple[str, list[tuple[str, float, str]]]:
    """Remove ``<lora:...>`` tags from ``text``; return the text and ``(name, weight, tag)``.

    With three parts (``<lora:name:te:unet>``), A1111's second number is the UNet's
    multiplier; the UNet is what this server adapts (text-encoder weights are ignored).
    """
    found: list[tuple[str, float, str]] = []

    def take(match: re.Match[str]) -> str:
        tag = match.group(0)
        weight = match.group(3) if match.group(3) not in (None, "") else match.group(2)
        found.append((match.group(1).strip(), _tag_weight(weight, tag, param), tag))
        return ""

    stripped = A1111_TAG.sub(take, text)
    if found:
        stripped = " ".join(stripped.split())
    return stripped, found


def a1111_loras(
    model: ModelConfig, prompt: str, negative_prompt: str | None
) -> tuple[str, str | None, tuple[LoraRef, ...]]:
    """A1111 prompts with their ``<lora:...>`` tags stripped, and the adapters they name."""
    prompt, tags = strip_tags(prompt, "prompt")
    params = ["prompt"] * len(tags)
    if negative_prompt:
        negative_prompt, negative_tags = strip_tags(negative_prompt, "negative_prompt")
        tags += negative_tags
        params += ["negative_prompt"] * len(negative_tags)
    pairs = [(name, weight) for name, weight, _ in tags]
    labels = [
        f"LoRA tag {tag} in '{param}'" for (_, _, tag), param in zip(tags, params, strict=True)
    ]
    refs = check_refs(model, pairs, params, params, "prompt", labels)
    return prompt, negative_prompt or None, refs


def a1111_lora_items(model: ModelConfig, refresh: bool = False) -> list[dict[str, Any]]:
    """``GET /sdapi/v1/loras`` as A1111's Lora extension answers it:
    ``[{"name", "alias", "path", "metadata"}]`` (``lora_script.py: create_lora_json``)."""
    if not model.loras.enabled:
        return []
    items = []
    for info in registry_for(model).listing(refresh=refresh):
        if info.error is not None:
            continue
        metadata = {"ss_network_dim": info.rank, "imagegen_target_model": info.target_model}
        items.append(
            {"name": info.name, "alias": info.name, "path": info.path, "metadata": metadata}
        )
    return items


_REPLICA_PARAM = re.compile(r"^loras\[(\d+)\]$")


def renamed_param(exc: BaseException, param_for: Callable[[int], str]) -> BaseException:
    """A replica's load-time LoRA error names ``loras[i]``; give it the dialect's field."""
    from common.errors import APIError, unwrap

    cause = unwrap(exc)
    if isinstance(cause, APIError) and cause.param and (match := _REPLICA_PARAM.match(cause.param)):
        return APIError(
            cause.kind,
            cause.message,
            param=param_for(int(match.group(1))),
            code=cause.code,
            headers=cause.headers,
        )
    return exc
