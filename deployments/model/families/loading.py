"""Loading helpers every family shares: device, dtype, threads, ``from_pretrained``.

A family loads through diffusers' own pipeline class for its architecture, so a real
checkpoint (hub id or local folder) and a built-in tiny model (a folder written by
``save_pretrained``) go through the same ``from_pretrained`` call.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from common.model_config import ModelConfig

if TYPE_CHECKING:
    import torch

logger = logging.getLogger("imagegen.engine")

BUILTIN_PREFIX = "builtin:"


def torch_dtype(name: str) -> torch.dtype:
    import torch

    return {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}[name]


def pick_device(name: str) -> str:
    import torch

    if name == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if name == "cuda" and not torch.cuda.is_available():
        raise RuntimeError("model config asks for device 'cuda' but no CUDA device is visible")
    return name


def pin_threads(count: int | None) -> None:
    """OpenMP thread counts are per calling thread, so pin in whichever thread runs us."""
    import torch

    if count is not None and torch.get_num_threads() != count:
        torch.set_num_threads(count)


def resolve_file(ref: str) -> Path:
    """A local path, or ``hf://<owner>/<repo>/<file>`` fetched through the hub cache."""
    if ref.startswith("hf://"):
        from huggingface_hub import hf_hub_download

        owner, repo, filename = ref.removeprefix("hf://").split("/", 2)
        return Path(hf_hub_download(f"{owner}/{repo}", filename))
    path = Path(ref).expanduser()
    if not path.is_file():
        raise FileNotFoundError(f"weights file not found: {path}")
    return path


def load_pipeline(
    config: ModelConfig, pipeline_class: str, builtins: dict[str, Callable[[], Path]]
) -> Any:
    """``<pipeline_class>.from_pretrained`` from the configured source, on its device.

    ``builtins`` maps this family's ``builtin:<name>`` sources to a function that
    builds (once) and returns the tiny model's folder.
    """
    import diffusers

    source: str | Path = config.source
    local_only = config.local_files_only
    if config.source.startswith(BUILTIN_PREFIX):
        name = config.source.removeprefix(BUILTIN_PREFIX)
        if name not in builtins:
            known = ", ".join(BUILTIN_PREFIX + key for key in sorted(builtins))
            raise ValueError(f"unknown built-in model {config.source!r} here; known: {known}")
        source, local_only = builtins[name](), True
    pipeline_cls = getattr(diffusers, pipeline_class)
    kwargs: dict[str, Any] = {"dtype": torch_dtype(config.dtype), "local_files_only": local_only}
    if config.revision:
        kwargs["revision"] = config.revision
    if config.variant:
        kwargs["variant"] = config.variant
    pipe = pipeline_cls.from_pretrained(source, **kwargs)
    if config.scheduler is not None:
        scheduler_cls = getattr(diffusers, config.scheduler.class_name, None)
        if scheduler_cls is None:
            raise ValueError(f"unknown scheduler class {config.scheduler.class_name!r}")
        pipe.scheduler = scheduler_cls.from_config(pipe.scheduler.config, **config.scheduler.config)
    pipe.set_progress_bar_config(disable=True)
    device = pick_device(config.device)
    logger.info("loaded %s (%s) from %s on %s", config.id, pipeline_class, source, device)
    return pipe.to(device)


def build_once(root: Path, name: str, build: Callable[[Path], None]) -> Path:
    """``root/name``, built by ``build(folder)`` the first time (a ``save_pretrained``).

    The build is written to a temporary sibling and renamed into place, so replicas
    that start together never load a half-written folder; a replica that loses the
    race keeps the winner's identical copy.
    """
    import shutil
    import tempfile

    target = root / name
    if (target / "model_index.json").is_file():
        return target
    root.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{name}-", dir=root))
    try:
        build(staging)
        try:
            staging.rename(target)
        except OSError:
            if not (target / "model_index.json").is_file():
                raise
    finally:
        if staging.exists():
            shutil.rmtree(staging, ignore_errors=True)
    return target


def to_uint8(images: Any) -> tuple[Any, Any]:
    """Floats in [0, 1] ``(B, H, W, 3)`` -> uint8, and a finite flag per image."""
    import numpy as np

    images = np.asarray(images)
    finite = np.isfinite(images).reshape(len(images), -1).all(axis=1)
    images = np.nan_to_num(images, nan=0.0, posinf=1.0, neginf=0.0)
    return (images * 255.0).round().clip(0, 255).astype(np.uint8), finite
