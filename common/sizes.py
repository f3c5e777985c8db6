"""Map requested output sizes to the resolution a model generates at.

SDXL was trained on ~1 MP buckets whose sides are multiples of 64; asking it for
512x512 gives garbage. So every OpenAI size maps to a bucket, the model generates
at the bucket, and the encoder resizes to exactly what the client asked for.
The table is per model (``ModelConfig.buckets``): an SD 1.5 model has other buckets.
"""

from __future__ import annotations

import re

# The sizes OpenAI's Images API takes, in its documented order.
OPENAI_SIZES = (
    "auto",
    "256x256",
    "512x512",
    "1024x1024",
    "1536x1024",
    "1024x1536",
    "1792x1024",
    "1024x1792",
)

SDXL_BUCKETS: dict[str, tuple[int, int]] = {
    "auto": (1024, 1024),
    "256x256": (1024, 1024),
    "512x512": (1024, 1024),
    "1024x1024": (1024, 1024),
    "1536x1024": (1216, 832),
    "1024x1536": (832, 1216),
    "1792x1024": (1344, 768),
    "1024x1792": (768, 1344),
}

# What "auto" means for the output: the default square size.
AUTO_OUTPUT = (1024, 1024)


# ASCII digits only: str.isdigit() also takes "²", which int() then refuses.
_WXH = re.compile(r"([0-9]{1,5})x([0-9]{1,5})")


def parse_size(size: str, auto: tuple[int, int] | None = AUTO_OUTPUT) -> tuple[int, int]:
    """``"1536x1024"`` -> ``(1536, 1024)`` as (width, height): the one WxH parser.

    ``auto`` is what ``"auto"`` means (``None``: not a size in this dialect). Raises
    ``ValueError`` for anything else; callers turn it into their own 400.
    """
    if size == "auto" and auto is not None:
        return auto
    match = _WXH.fullmatch(size)
    if match is None:
        raise ValueError(f"size must look like '1024x1024', got {size!r}")
    return int(match.group(1)), int(match.group(2))


def scaled_bucket(bucket: tuple[int, int], scale: float, multiple: int) -> tuple[int, int]:
    """Scale a bucket by a model's ``generation_scale`` and snap down to ``multiple``.

    A real SDXL uses scale 1.0. The tiny built-in model uses a small scale so a
    1024x1024 request costs a fraction of a second on a CPU.
    """
    width, height = bucket
    gen_w = max(multiple, int(width * scale) // multiple * multiple)
    gen_h = max(multiple, int(height * scale) // multiple * multiple)
    return gen_w, gen_h


# gpt-image-2's rules for a free ``size`` on OpenAI generations.
FREE_SIZE_MULTIPLE = 16
FREE_SIZE_MAX_SIDE = 3840
FREE_SIZE_MAX_ASPECT = 3


def gpt_image_size_error(width: int, height: int) -> str | None:
    """Why a free ``WxH`` breaks gpt-image-2's rules, stated as the rule; None if it keeps
    them. The model's own pixel limits are checked separately."""
    if min(width, height) < FREE_SIZE_MULTIPLE:
        return f"each side must be at least {FREE_SIZE_MULTIPLE}"
    if width % FREE_SIZE_MULTIPLE or height % FREE_SIZE_MULTIPLE:
        return f"each side must be a multiple of {FREE_SIZE_MULTIPLE}"
    if max(width, height) > FREE_SIZE_MAX_SIDE:
        return f"the longest side must be at most {FREE_SIZE_MAX_SIDE}"
    if max(width, height) > FREE_SIZE_MAX_ASPECT * min(width, height):
        return f"the aspect ratio must be at most {FREE_SIZE_MAX_ASPECT}:1"
    return None


# Every family served here (SDXL, FLUX.1, Qwen-Image) decodes through a VAE that
# downsamples 8x per side; FLUX and Qwen then pack 2x2 patches, which keeps the count.
LATENT_SCALE = 8


def latent_pixels(width: int, height: int) -> int:
    """Latent height x latent width of one image: step mode's unit of compute."""
    return max(1, width // LATENT_SCALE) * max(1, height // LATENT_SCALE)
