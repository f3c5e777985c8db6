"""LoRA adapters named by URL: fetched once through the SSRF-safe fetcher, cached by hash.

The ingress fetches (same address checks and redirect rules as ``image_url``, the
adapter cap ``loras.max_file_bytes`` instead of the image cap, any content type) and
writes the file into the model's first LoRA folder as ``url-<sha256 prefix>``; the
job then names that stem, which the replica loads like any other file. The folder
must therefore be shared by the ingress and the model replicas (one node, or a
shared volume), as ``docs/loras.md`` says.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import tempfile
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

from common.job import GenerationJob, LoraRef
from common.model_config import ModelConfig
from serve_app.inputs.fetch import ImageFetcher
from storage.lora_files import SUFFIX, classify, lora_dirs, registry_for

URL_PREFIX = "url-"


def url_stem(url: str) -> str:
    return URL_PREFIX + hashlib.sha256(url.encode()).hexdigest()[:24]


def _write(folder: Path, stem: str, data: bytes) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    fd, staging = tempfile.mkstemp(prefix=f".{stem}-", suffix=".tmp", dir=folder)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
        os.replace(staging, folder / f"{stem}{SUFFIX}")
    finally:
        if os.path.exists(staging):
            os.unlink(staging)


async def fetch_url_loras(
    job: GenerationJob, model: ModelConfig, fetcher: ImageFetcher, param_for: Callable[[int], str]
) -> GenerationJob:
    """Replace every URL adapter of ``job`` by the stem of its fetched (cached) file."""
    if not any(classify(ref.name) == "url" for ref in job.loras):
        return job
    folder = lora_dirs(model.loras, model)[0]
    refs = []
    for index, ref in enumerate(job.loras):
        if classify(ref.name) != "url":
            refs.append(ref)
            continue
        stem = url_stem(ref.name)
        if not (folder / f"{stem}{SUFFIX}").is_file():
            data = await fetcher.fetch(ref.name, param_for(index), model.loras.max_file_bytes)
            await asyncio.to_thread(_write, folder, stem, data)
            registry_for(model).refresh()
        refs.append(LoraRef(stem, ref.scale))
    return replace(job, loras=tuple(refs))
