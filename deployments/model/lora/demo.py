"""Built-in demo LoRA adapters for the built-in tiny models, built in code (no download).

Each is a rank-4 adapter on every attention projection of the tiny denoiser (UNet or
transformer: every family names them ``to_q``/``to_k``/``to_v``/``to_out.0``), with
weights drawn from a fixed seed, in the diffusers/PEFT key layout
(``<unet|transformer>.<module>.lora_A.weight``) that ``save_lora_weights`` writes. They are strong
enough to change the tiny model's (noise) images visibly, so the README and the
tests can show an adapter at work. Like the tiny model itself, they are written to
disk once (into the first LoRA folder) and from then on loaded like any user file.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

DEMO_RANK = 4
_RECIPE = "v1"
_TARGETS = ("to_q", "to_k", "to_v", "to_out.0")
_FINGERPRINT_KEY = "imagegen_demo_recipe"


def demo_state_dict(denoiser: Any, seed: int, rank: int = DEMO_RANK) -> dict[str, Any]:
    """A LoRA for ``denoiser``'s attention projections, deterministic in ``seed``."""
    import torch

    generator = torch.Generator("cpu").manual_seed(seed)
    state: dict[str, Any] = {}
    prefix = "unet" if type(denoiser).__name__.startswith("UNet") else "transformer"
    for name, module in denoiser.named_modules():
        if not isinstance(module, torch.nn.Linear) or not name.endswith(_TARGETS):
            continue
        down = torch.randn(rank, module.in_features, generator=generator) / module.in_features**0.5
        up = torch.randn(module.out_features, rank, generator=generator) * 0.5
        state[f"{prefix}.{name}.lora_A.weight"] = down.contiguous()
        state[f"{prefix}.{name}.lora_B.weight"] = up.contiguous()
    return state


def _fingerprint(denoiser: Any) -> str:
    shapes = [(n, tuple(p.shape)) for n, p in denoiser.named_parameters()]
    return hashlib.sha256(repr((_RECIPE, DEMO_RANK, shapes)).encode()).hexdigest()[:12]


def ensure_demo_loras(folder: Path, denoiser: Any, names: Sequence[str]) -> list[Path]:
    """Write the demo adapters ``names`` into ``folder`` unless current copies are there.

    Each file is written to a temporary sibling and renamed, so a replica starting
    at the same time never reads half a file.
    """
    from safetensors import safe_open
    from safetensors.torch import save_file

    folder.mkdir(parents=True, exist_ok=True)
    fingerprint = _fingerprint(denoiser)
    paths = []
    for seed, name in enumerate(names, start=1):
        target = folder / f"{name}.safetensors"
        paths.append(target)
        if target.is_file():
            try:
                with safe_open(str(target), framework="pt") as handle:
                    if (handle.metadata() or {}).get(_FINGERPRINT_KEY) == fingerprint:
                        continue
            except Exception:  # noqa: BLE001, S110 - a broken copy is rewritten below
                pass
        fd, staging = tempfile.mkstemp(prefix=f".{name}-", suffix=".tmp", dir=folder)
        os.close(fd)
        try:
            save_file(
                demo_state_dict(denoiser, seed), staging, metadata={_FINGERPRINT_KEY: fingerprint}
            )
            os.replace(staging, target)
        finally:
            if os.path.exists(staging):
                os.unlink(staging)
    return paths
