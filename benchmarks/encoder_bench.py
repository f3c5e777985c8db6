"""PNG encodes per second per core: Pillow's default level against ours, lossless both."""

from __future__ import annotations

import io
import time

import numpy as np
from PIL import Image

from deployments.encoder.codec import DEFAULT_PNG_LEVEL, encode_image


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


def measure_previews(min_time_s: float = 1.0) -> list[dict[str, float | str]]:
    """A streamed preview encoded as a final would be against the preview settings.

    Previews are latent-resolution: 16x16 for the tiny model's 1024x1024 bucket,
    128x128 for SDXL's. Each is encoded to a 1024x1024 PNG.
    """
    rng = np.random.default_rng(1)
    rows: list[dict[str, float | str]] = []
    for side in (16, 128):
        preview = (rng.random((side, side, 3)) * 255).astype(np.uint8)
        for label, fast in (("as a final", False), ("preview settings", True)):
            count, size = 0, 0
            start = time.perf_counter()
            while count < 3 or time.perf_counter() - start < min_time_s:
                size = len(encode_image(preview, 1024, 1024, "png", None, preview=fast))
                count += 1
            elapsed = time.perf_counter() - start
            rows.append(
                {
                    "preview": f"{side}x{side}",
                    "setting": label,
                    "encode_ms": 1000 * elapsed / count,
                    "bytes": size,
                }
            )
    return rows


def main() -> None:
    """``python -m benchmarks.encoder_bench``: both tables as markdown."""
    print("| setting | 1024² PNG encodes/s/core | bytes |\n|---|---|---|")
    for row in measure():
        print(f"| {row['setting']} | {row['encodes_per_s']:.2f} | {row['bytes']:,} |")
    print("\n| preview | setting | ms per 1024² PNG | bytes |\n|---|---|---|---|")
    for prow in measure_previews():
        print(
            f"| {prow['preview']} | {prow['setting']} | {prow['encode_ms']:.1f} "
            f"| {prow['bytes']:,} |"
        )


if __name__ == "__main__":
    main()
