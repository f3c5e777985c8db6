"""OpenAI's rules that are not schema: free sizes, the default response format, usage.

- ``size`` on generations: an OpenAI size (mapped to the model's bucket), or a free
  ``WxH`` by gpt-image-2's rules (``common.sizes.gpt_image_size_error``) within the
  model's own pixel limits; the output is exactly that size.
- ``response_format`` unset: ``url`` for ``dall-e-2`` and ``dall-e-3``, ``b64_json``
  for every other model name, as OpenAI answers (streams are always ``b64_json``).
- ``usage``: ``input_tokens`` are the prompt's tokens, counted as CLIP's
  pre-tokenizer splits text (a word, a digit or a run of punctuation is one token;
  the exact count of a model's BPE can be higher for rare words). ``output_tokens``
  follow OpenAI's image token rule for gpt-image models: the shorter side is ``b``
  tiles (``b`` = 16 low, 32 medium, 64 high quality), the longer side scales by the
  aspect ratio, and an image costs ``(width_tiles + 1) * height_tiles`` tokens (1024²
  medium: 33 * 32 = 1056; 1536x1024 high: 97 * 64 = 6208, OpenAI's published table).
"""

from __future__ import annotations

import re

from common.errors import invalid
from common.model_config import ModelConfig
from common.sizes import OPENAI_SIZES, gpt_image_size_error, parse_size
from serve_app.dialects.base import free_size
from serve_app.protocol.openai import (
    ImageUsage,
    InputTokensDetails,
    OpenAIImageParams,
    ResponseFormat,
)

URL_DEFAULT_MODELS = frozenset({"dall-e-2", "dall-e-3"})
# Tiles along the shorter side per quality; "auto" and DALL-E's "standard" are medium.
QUALITY_TILES = {"low": 16, "medium": 32, "high": 64, "hd": 64}
DEFAULT_TILES = 32
# CLIP's pre-tokenizer (words, single digits, runs of other non-space characters).
_CLIP_WORDS = re.compile(r"'s|'t|'re|'ve|'m|'ll|'d|[^\W\d_]+|\d|[^\s\w]+|_+", re.IGNORECASE)


def response_format(req: OpenAIImageParams) -> ResponseFormat:
    """What the client asked for, else OpenAI's default for the model name it sent."""
    if req.response_format is not None:
        return req.response_format
    if not req.stream and (req.model or "").strip().lower() in URL_DEFAULT_MODELS:
        return "url"
    return "b64_json"


def generation_size(size: str, model: ModelConfig) -> tuple[tuple[int, int], tuple[int, int]]:
    """(output size, generation size) of a generations ``size``; a 400 stating the rule."""
    if size in OPENAI_SIZES:
        return parse_size(size), model.generation_size(size)
    try:
        width, height = parse_size(size.strip().lower(), auto=None)
    except ValueError:
        raise invalid(
            f"Invalid size '{size}': use auto, one of {list(OPENAI_SIZES[1:])}, or a free "
            "WIDTHxHEIGHT (sides multiples of 16, longest side at most 3840, aspect ratio "
            "at most 3:1).",
            "size",
            "invalid_size",
        ) from None
    rule = gpt_image_size_error(width, height)
    if rule is not None:
        raise invalid(
            f"Invalid size '{size}': {rule}.",
            "size",
            "invalid_size",
        )
    return (width, height), free_size(model, width, height, ("size", "size"))


def prompt_tokens(prompt: str) -> int:
    return len(_CLIP_WORDS.findall(prompt))


def image_tokens(width: int, height: int, quality: str | None) -> int:
    """OpenAI's output tokens for one image of ``width`` x ``height``."""
    tiles = QUALITY_TILES.get((quality or "").lower(), DEFAULT_TILES)
    short = min(width, height)
    width_tiles = round(tiles * width / short)
    height_tiles = round(tiles * height / short)
    return (width_tiles + 1) * height_tiles


def usage(prompt: str, n: int, size: tuple[int, int], quality: str | None) -> ImageUsage:
    """The ``usage`` of ``n`` images of ``size`` made from ``prompt``."""
    text = prompt_tokens(prompt)
    output = n * image_tokens(size[0], size[1], quality)
    return ImageUsage(
        input_tokens=text,
        input_tokens_details=InputTokensDetails(text_tokens=text),
        output_tokens=output,
        total_tokens=text + output,
    )
