"""Pixels -> image file bytes: resize to the requested size, then png/jpeg/webp.

``output_compression`` follows OpenAI's meaning: 0-100, where 100 (their default)
keeps the most detail. For jpeg and webp it is the encoder quality. PNG is
lossless either way, so there it only trades CPU for size: 100 stores with zlib
level 0, 0 with level 9.

Defaults when unset, measured on a 1024x1024 image upscaled from the tiny model
(one CPU core): PNG zlib level 3 took 0.10 s for 1.29 MB where level 6 took 0.34 s
for 1.16 MB; webp method 2 took 0.04 s where method 4 took 0.10 s, +1.5% bytes.

Streamed previews (``preview=True``) are latent-resolution projections, 1/8 of the
final size per side: they hold no detail a smooth resize or a high compression
level could keep. They are upscaled nearest-neighbour (the preview's true
resolution stays visible as blocks) and written with the fastest settings: PNG
zlib level 1, jpeg/webp quality at most ``PREVIEW_QUALITY``, webp method 0.
On one core, a 16x16 or 128x128 preview to a 1024x1024 PNG takes 10-13 ms this
way against 102 ms encoded like a final, and 19-92 KB against 0.9-2.1 MB
(``python -m benchmarks.encoder_bench``, ``benchmarks/results/preview_encoding.md``).
"""

from __future__ import annotations

import io

import numpy as np
from PIL import Image
from PIL.PngImagePlugin import PngInfo

DEFAULT_QUALITY = 90
DEFAULT_PNG_LEVEL = 3
WEBP_METHOD = 2
PREVIEW_PNG_LEVEL = 1
PREVIEW_QUALITY = 60
# The text chunk A1111 writes its generation parameters into.
PNG_PARAMETERS = "parameters"


def to_pil(pixels: np.ndarray) -> Image.Image:
    """An ``(H, W, 3|4)`` uint8 array -> RGB or RGBA image."""
    if pixels.dtype != np.uint8 or pixels.ndim != 3 or pixels.shape[2] not in (3, 4):
        raise ValueError(f"expected (H, W, 3|4) uint8 pixels, got {pixels.shape} {pixels.dtype}")
    return Image.fromarray(pixels, mode="RGBA" if pixels.shape[2] == 4 else "RGB")


def resize(
    image: Image.Image,
    width: int,
    height: int,
    resample: Image.Resampling = Image.Resampling.LANCZOS,
) -> Image.Image:
    if image.size == (width, height):
        return image
    return image.resize((width, height), resample)


def paste_outside_mask(
    pixels: np.ndarray, original: np.ndarray, mask: np.ndarray, width: int, height: int
) -> np.ndarray:
    """Inpainting: the generated image where ``mask`` is 255, the original elsewhere.

    ``original`` and ``mask`` are at ``width`` x ``height``; ``pixels`` is resized to
    it first. A VAE does not reconstruct pixels exactly (the tiny model's random one
    not at all), so like A1111 and diffusers' ``apply_overlay`` the untouched area is
    the uploaded image itself. Values between 0 and 255 blend linearly.
    """
    generated = np.asarray(resize(to_pil(pixels), width, height).convert("RGB"), np.float32)
    alpha = (mask.astype(np.float32) / 255.0)[..., None]
    blended = generated * alpha + original.astype(np.float32) * (1.0 - alpha)
    return blended.round().clip(0, 255).astype(np.uint8)


def encode_image(
    pixels: np.ndarray,
    width: int,
    height: int,
    output_format: str,
    compression: int | None,
    preview: bool = False,
    png_text: str | None = None,
) -> bytes:
    """Encode one image at exactly ``width`` x ``height`` (``preview``: fastest settings).

    ``png_text``: A1111's ``parameters`` text chunk, written into PNGs only."""
    resample = Image.Resampling.NEAREST if preview else Image.Resampling.LANCZOS
    image = resize(to_pil(pixels), width, height, resample)
    quality = DEFAULT_QUALITY if compression is None else compression
    if preview:
        quality = min(quality, PREVIEW_QUALITY)
    buffer = io.BytesIO()
    if output_format == "png":
        level = DEFAULT_PNG_LEVEL if compression is None else round(9 * (100 - compression) / 100)
        info = None
        if png_text is not None:
            info = PngInfo()
            info.add_text(PNG_PARAMETERS, png_text)
        level = PREVIEW_PNG_LEVEL if preview else level
        image.save(buffer, format="PNG", compress_level=level, pnginfo=info)
    elif output_format == "jpeg":
        if image.mode == "RGBA":
            raise ValueError("jpeg cannot carry an alpha channel")
        image.save(buffer, format="JPEG", quality=quality)
    elif output_format == "webp":
        method = 0 if preview else WEBP_METHOD
        image.save(buffer, format="WEBP", quality=quality, method=method)
    else:
        raise ValueError(f"unsupported output_format {output_format!r}")
    return buffer.getvalue()
