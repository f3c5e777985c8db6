"""Encoding: exact output size, each format, compression, alpha."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from deployments.encoder.codec import encode_image

RNG = np.random.default_rng(0)
PIXELS = (RNG.random((96, 168, 3)) * 255).astype(np.uint8)


def decode(data: bytes) -> Image.Image:
    return Image.open(io.BytesIO(data))


@pytest.mark.parametrize("fmt,pil_format", [("png", "PNG"), ("jpeg", "JPEG"), ("webp", "WEBP")])
@pytest.mark.parametrize("size", [(1792, 1024), (256, 256), (168, 96)])
def test_formats_and_exact_sizes(fmt: str, pil_format: str, size: tuple[int, int]) -> None:
    image = decode(encode_image(PIXELS, *size, fmt, None))
    assert image.format == pil_format
    assert image.size == size
    assert image.mode == "RGB"


def test_same_size_is_not_resampled() -> None:
    image = decode(encode_image(PIXELS, 168, 96, "png", None))
    assert np.array_equal(np.asarray(image), PIXELS)


@pytest.mark.parametrize("fmt", ["jpeg", "webp"])
def test_lower_compression_value_means_smaller_lossy_files(fmt: str) -> None:
    small = encode_image(PIXELS, 512, 512, fmt, 10)
    large = encode_image(PIXELS, 512, 512, fmt, 95)
    assert len(small) < len(large)


def test_png_stays_lossless_at_any_compression() -> None:
    for level in (0, 50, 100):
        image = decode(encode_image(PIXELS, 168, 96, "png", level))
        assert np.array_equal(np.asarray(image), PIXELS)


@pytest.mark.parametrize("fmt", ["png", "webp"])
def test_alpha_is_kept(fmt: str) -> None:
    rgba = np.dstack([PIXELS, np.full(PIXELS.shape[:2], 7, np.uint8)])
    image = decode(encode_image(rgba, 168, 96, fmt, 100))
    assert image.mode == "RGBA"
    assert int(np.asarray(image)[..., 3].max()) <= 8


def test_jpeg_refuses_alpha() -> None:
    rgba = np.dstack([PIXELS, PIXELS[..., :1]])
    with pytest.raises(ValueError, match="alpha"):
        encode_image(rgba, 168, 96, "jpeg", None)


def test_rejects_non_image_arrays() -> None:
    with pytest.raises(ValueError, match="uint8"):
        encode_image(PIXELS.astype(np.float32), 10, 10, "png", None)


@pytest.mark.parametrize("fmt", ["png", "jpeg", "webp"])
def test_previews_keep_the_size_and_cost_fewer_bytes(fmt: str) -> None:
    rng = np.random.default_rng(0)
    latent_sized = (rng.random((16, 16, 3)) * 255).astype(np.uint8)
    final = encode_image(latent_sized, 256, 256, fmt, None)
    preview = encode_image(latent_sized, 256, 256, fmt, None, preview=True)
    assert Image.open(io.BytesIO(preview)).size == (256, 256)
    assert len(preview) < len(final)


def test_png_previews_are_nearest_neighbour_upscales() -> None:
    """Each preview pixel becomes a flat block: no detail is invented, PNG stays lossless."""
    small = np.arange(4 * 4 * 3, dtype=np.uint8).reshape(4, 4, 3)
    preview = encode_image(small, 16, 16, "png", None, preview=True)
    decoded = np.asarray(Image.open(io.BytesIO(preview)))
    np.testing.assert_array_equal(decoded, small.repeat(4, axis=0).repeat(4, axis=1))
