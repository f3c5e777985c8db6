"""Read a LoRA file into per-layer deltas for one denoiser, whatever the family.

A family turns the file's keys into diffusers/PEFT form with its own pipeline's
``lora_state_dict`` (kohya, XLabs, ai-toolkit and the other layouts that diffusers
converts), keeping only the denoiser's entries as ``<module>.lora_A/B.weight``; this
module reads the file, checks every layer against the denoiser's modules, and stacks
the weights on the device. An adapter for another architecture is refused at load
with the reason, never applied half-way.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from common.errors import invalid
from deployments.model.lora.plan import LayerDelta

# (raw file tensors) -> (denoiser PEFT state, alphas by "<prefix>.<module>.alpha",
# count of text-encoder tensors the family ignores)
KeyReader = Callable[[dict[str, Any]], tuple[dict[str, Any], dict[str, Any], int]]


@dataclass
class LoadedAdapter:
    name: str
    layers: dict[str, LayerDelta]
    rank: int
    nbytes: int
    load_ms: float
    ignored_text_encoder_tensors: int = 0


def read_file(path: Path, name: str) -> tuple[dict[str, Any], dict[str, str]]:
    """The file's tensors and header metadata; a 400 naming the adapter if unreadable."""
    from safetensors import SafetensorError, safe_open
    from safetensors.torch import load_file

    try:
        raw = load_file(str(path))
        with safe_open(str(path), framework="pt") as handle:
            metadata = handle.metadata() or {}
    except (SafetensorError, OSError, ValueError, RuntimeError) as exc:
        raise invalid(
            f"LoRA adapter '{name}' is not a readable safetensors file ({exc}).",
            code="invalid_lora",
        ) from None
    return raw, metadata


def parse_adapter(
    path: Path, name: str, denoiser: Any, read_keys: KeyReader, family: str
) -> LoadedAdapter:
    """Parse ``path`` for ``denoiser`` with the family's key reader."""
    started = time.perf_counter()
    raw, metadata = read_file(path, name)
    try:
        state, alphas, ignored = read_keys(raw)
    except Exception as exc:  # noqa: BLE001 - any parse failure is the file's fault
        raise invalid(
            f"LoRA adapter '{name}' is not a LoRA diffusers can read for {family} ({exc}).",
            code="invalid_lora",
        ) from None
    if any(part in k for k in state for part in ("lora_magnitude_vector", ".lokr_")):
        raise invalid(
            f"LoRA adapter '{name}' is a DoRA or LoKr adapter; only plain LoRA is served.",
            code="invalid_lora",
        )
    layers = match_layers(state, alphas, denoiser, _metadata_scale(metadata), name)
    ranks = {delta.down.shape[0] for delta in layers.values()}
    nbytes = sum(d.down.nbytes + d.up.nbytes for d in layers.values())
    load_ms = (time.perf_counter() - started) * 1000
    return LoadedAdapter(name, layers, max(ranks), nbytes, load_ms, ignored)


def match_layers(
    state: Mapping[str, Any],
    alphas: Mapping[str, Any],
    denoiser: Any,
    meta_scale: float | None,
    name: str,
) -> dict[str, LayerDelta]:
    """``<module>.lora_A/B.weight`` pairs -> deltas on ``denoiser``'s Linear/Conv2d layers."""
    import torch

    modules = dict(denoiser.named_modules())
    param = next(denoiser.parameters())
    layers: dict[str, LayerDelta] = {}
    missing: list[str] = []
    for key, down in state.items():
        if not key.endswith("lora_A.weight"):
            continue
        path_ = key.removesuffix(".lora_A.weight")
        up = state.get(f"{path_}.lora_B.weight")
        module = modules.get(path_)
        if up is None or not isinstance(module, torch.nn.Linear | torch.nn.Conv2d):
            missing.append(path_)
            continue
        conv = isinstance(module, torch.nn.Conv2d)
        in_dim = module.in_channels if conv else module.in_features
        out_dim = module.out_channels if conv else module.out_features
        if down.shape[1] != in_dim or up.shape[0] != out_dim or up.shape[1] != down.shape[0]:
            missing.append(path_)
            continue
        rank = down.shape[0]
        alpha = _alpha(alphas, path_, meta_scale * rank if meta_scale else rank)
        if conv and down.ndim == 2:
            down, up = down[:, :, None, None], up[:, :, None, None]
        layers[path_] = LayerDelta(
            down=down.to(param.device, param.dtype).contiguous(),
            up=up.to(param.device, param.dtype).contiguous(),
            scale=float(alpha) / rank,
            conv=conv,
        )
    if missing or not layers:
        example = f" (e.g. '{missing[0]}')" if missing else ""
        raise invalid(
            f"LoRA adapter '{name}' does not fit this model: {len(missing)} of "
            f"{len(missing) + len(layers)} layers have no matching layer{example}. Is it "
            "for another architecture (an SD 1.5 LoRA on SDXL, an SDXL LoRA on FLUX)?",
            code="lora_wrong_architecture",
        )
    return layers


def _alpha(alphas: Mapping[str, Any], module: str, default: float) -> float:
    for prefix in ("unet.", "transformer.", ""):
        value = alphas.get(f"{prefix}{module}.alpha")
        if value is not None:
            return float(value)
    return default


def _metadata_scale(metadata: dict[str, str]) -> float | None:
    """``alpha / r`` from diffusers' ``lora_adapter_metadata`` header entry, if present."""
    blob = metadata.get("lora_adapter_metadata")
    if not blob:
        return None
    try:
        info = json.loads(blob)
        for prefix in ("unet", "transformer"):
            alpha, rank = info.get(f"{prefix}.lora_alpha"), info.get(f"{prefix}.r")
            if alpha and rank:
                return float(alpha) / float(rank)
    except (ValueError, TypeError, AttributeError):
        return None
    return None


def split_prefix(
    state: Mapping[str, Any], prefix: str, text_prefixes: tuple[str, ...]
) -> tuple[dict[str, Any], int]:
    """The denoiser's entries of ``state`` without ``prefix``, and the text-encoder count."""
    text = [k for k in state if k.startswith(text_prefixes)]
    if any(k.startswith(prefix) for k in state):
        mine = {k.removeprefix(prefix): v for k, v in state.items() if k.startswith(prefix)}
    else:
        mine = {k: v for k, v in state.items() if k not in text}
    return mine, len(text)
