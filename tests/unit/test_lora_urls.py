"""LoRA adapters by URL: fetched once through the SSRF-safe fetcher, cached by hash."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from common.config import ImageInputConfig
from common.errors import APIError
from common.job import GenerationJob, LoraRef
from common.model_config import ModelConfig
from serve_app.inputs.fetch import ImageFetcher
from serve_app.inputs.lora_urls import fetch_url_loras, url_stem
from tests.support.image_server import ImageServer, image_server

ALLOWED_HOST = "127.0.0.2"
ADAPTER = b"pretend-safetensors" * 10


@pytest.fixture(scope="module")
def allowed() -> Iterator[ImageServer]:
    with image_server(ALLOWED_HOST) as server:
        server.files["/a.safetensors"] = ADAPTER
        server.files["/big.safetensors"] = b"\0" * 4096
        yield server


@pytest.fixture(scope="module")
def internal() -> Iterator[ImageServer]:
    with image_server("127.0.0.1") as server:
        server.files["/a.safetensors"] = ADAPTER
        yield server


def setup(tmp_path: Path, max_file_bytes: int = 1 << 20) -> tuple[ModelConfig, ImageFetcher]:
    model = ModelConfig(
        id="m",
        source="builtin:tiny-sdxl",
        loras={"dirs": [str(tmp_path)], "max_file_bytes": max_file_bytes},
    )
    limits = ImageInputConfig(fetch_allowlist=[ALLOWED_HOST], fetch_timeout_s=2.0)
    return model, ImageFetcher(limits)


def job(*names: str) -> GenerationJob:
    loras = tuple(LoraRef(name, 0.5) for name in names)
    return GenerationJob("r", "x", None, (1,), 64, 64, 2, 5.0, loras=loras)


def param(i: int) -> str:
    return f"image_loras[{i}].path"


async def test_a_url_is_fetched_once_and_named_by_its_hash(
    tmp_path: Path, allowed: ImageServer
) -> None:
    model, fetcher = setup(tmp_path)
    url = allowed.url("/a.safetensors")
    before = len(allowed.hits)
    first = await fetch_url_loras(job("demo-1", url), model, fetcher, param)
    assert first.loras == (LoraRef("demo-1", 0.5), LoraRef(url_stem(url), 0.5))
    assert (tmp_path / f"{url_stem(url)}.safetensors").read_bytes() == ADAPTER
    again = await fetch_url_loras(job(url), model, fetcher, param)
    assert again.loras == (LoraRef(url_stem(url), 0.5),)
    assert len(allowed.hits) == before + 1


async def test_a_private_address_is_refused_and_never_hit(
    tmp_path: Path, internal: ImageServer
) -> None:
    model, fetcher = setup(tmp_path)
    with pytest.raises(APIError) as caught:
        await fetch_url_loras(job("ok", internal.url("/a.safetensors")), model, fetcher, param)
    assert (caught.value.status, caught.value.param) == (400, "image_loras[1].path")
    assert caught.value.code == "blocked_address"
    assert internal.hits == []


async def test_a_file_over_the_adapter_cap_is_refused(tmp_path: Path, allowed: ImageServer) -> None:
    model, fetcher = setup(tmp_path, max_file_bytes=2048)
    with pytest.raises(APIError) as caught:
        await fetch_url_loras(job(allowed.url("/big.safetensors")), model, fetcher, param)
    assert caught.value.param == "image_loras[0].path"
    assert list(tmp_path.iterdir()) == []
