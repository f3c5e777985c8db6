"""DALL-E sizes -> SDXL buckets -> the tiny model's scaled generation sizes."""

from __future__ import annotations

import pytest

from common.model_config import ModelConfig
from common.sizes import OPENAI_SIZES, SDXL_BUCKETS, parse_size, scaled_bucket


@pytest.mark.parametrize(
    "size,bucket",
    [
        ("1024x1024", (1024, 1024)),
        ("1792x1024", (1344, 768)),
        ("1024x1792", (768, 1344)),
        ("1536x1024", (1216, 832)),
        ("1024x1536", (832, 1216)),
        ("512x512", (1024, 1024)),
        ("256x256", (1024, 1024)),
        ("auto", (1024, 1024)),
    ],
)
def test_sdxl_buckets(size: str, bucket: tuple[int, int]) -> None:
    assert SDXL_BUCKETS[size] == bucket


def test_buckets_are_about_one_megapixel_in_multiples_of_64() -> None:
    for width, height in SDXL_BUCKETS.values():
        assert width % 64 == 0 and height % 64 == 0
        assert 0.75e6 <= width * height <= 1.1e6


def test_bucket_orientation_follows_the_request() -> None:
    for size in OPENAI_SIZES:
        out_w, out_h = parse_size(size)
        bucket_w, bucket_h = SDXL_BUCKETS[size]
        assert (out_w > out_h) == (bucket_w > bucket_h)


def test_parse_size() -> None:
    assert parse_size("1536x1024") == (1536, 1024)
    assert parse_size("auto") == (1024, 1024)
    with pytest.raises(ValueError):
        parse_size("big")


@pytest.mark.parametrize("scale", [1.0, 0.5, 0.125, 0.1])
def test_scaled_buckets_snap_to_multiples(scale: float) -> None:
    for bucket in SDXL_BUCKETS.values():
        width, height = scaled_bucket(bucket, scale, 8)
        assert width % 8 == 0 and height % 8 == 0
        assert width <= bucket[0] * scale and height <= bucket[1] * scale


def test_model_generation_size_uses_its_scale() -> None:
    real = ModelConfig(id="sdxl", source="x")
    tiny = ModelConfig(id="tiny", source="builtin:tiny-sdxl", generation_scale=0.125)
    assert real.generation_size("1792x1024") == (1344, 768)
    assert tiny.generation_size("1792x1024") == (168, 96)
    assert tiny.generation_size("256x256") == (128, 128)
