"""PNG encodes per second per core: Pillow's default level against ours, lossless both."""

from __future__ import annotations

import io
import time

import numpy as np
from PIL import Image

from deployments.codec import DEFAULT_PNG_LEVEL, encode_image


def smooth_image(size: int = 1024) -> np.ndarray:
    """A 128x128 random image upscaled to ``size``: what the tiny model's output becomes."""
    rng = np.random.default_rng(0)
    small = (rng.random((128, 128, 3)) * 255).astype(np.uint8)
    return np.asarray(Image.fromarray(small).resize((size, size), Image.Resampling.LANCZOS))


def measure(min_time_s: float = 2.0) -> list[dict[str, float]]:
    pixels = smooth_image()
    rows = []
    for label, level in (("pillow default (6)", 6), (f"ours ({DEFAULT_PNG_LEVEL})", None)):
        image = Image.fromarray(pixels)
        count, size = 0, 0
        start = time.perf_counter()
        while count < 3 or time.perf_counter() - start < min_time_s:
            if level is None:
                size = len(encode_image(pixels, 1024, 1024, "png", None))
            else:
                buffer = io.BytesIO()
                image.save(buffer, format="PNG", compress_level=level)
                size = len(buffer.getvalue())
            count += 1
        elapsed = time.perf_counter() - start
        rows.append({"setting": label, "encodes_per_s": count / elapsed, "bytes": size})
    return rows
