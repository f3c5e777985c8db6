"""Helpers to decode and compare images returned by the server."""

from __future__ import annotations

import base64
import io

import numpy as np
from PIL import Image

# Generation is batch-variant by +-1/255 on CPU; Lanczos upscaling of the small
# generated image can carry that to +-2 in a few output pixels.
TOLERANCE = 2


def decode_b64(data: str | None) -> Image.Image:
    assert data, "expected b64_json"
    image = Image.open(io.BytesIO(base64.b64decode(data)))
    image.load()
    return image


def pixels(image: Image.Image) -> np.ndarray:
    return np.asarray(image.convert("RGB")).astype(int)


def assert_close(a: Image.Image, b: Image.Image) -> None:
    assert a.size == b.size
    diff = np.abs(pixels(a) - pixels(b))
    assert diff.max() <= TOLERANCE, f"max pixel difference {diff.max()}"
