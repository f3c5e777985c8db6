"""The rule that tells OpenAI, Together and imagine requests apart on one route."""

from __future__ import annotations

from typing import Any

import pytest

from common.errors import APIError
from serve_app.dialects.detect import detect

OPENAI_UA = {"user-agent": "OpenAI/Python 3.54.0"}
TOGETHER_UA = {"user-agent": "Together/Python 3.1.1"}
IMAGINE_UA = {"user-agent": "python-imagine-sdk/0.5.0"}
AIOHTTP_UA = {"user-agent": "Python/3.11 aiohttp/3.12.0"}


@pytest.mark.parametrize(
    "headers,body,dialect",
    [
        # What each SDK sends, exactly (FACTS.md and the SDK sources).
        (OPENAI_UA, {"model": "dall-e-3", "prompt": "p", "n": 1, "size": "1024x1024"}, "openai"),
        (OPENAI_UA, {"prompt": "p", "seed": 3, "negative_prompt": "x"}, "openai"),
        (TOGETHER_UA, {"model": "m", "prompt": "p"}, "together"),
        (TOGETHER_UA, {"model": "m", "prompt": "p", "height": 512, "width": 512}, "together"),
        (
            IMAGINE_UA,
            {
                "prompt": "p",
                "model": "m",
                "stream": False,
                "n": 1,
                "num_inference_steps": 20,
                "size": "512x512",
                "negative_prompt": "blurry",
                "seed": 27,
                "seed_increment": 100,
                "guidance_scale": 6.5,
                "response_format": "b64_json",
            },
            "imagine",
        ),
        # Open WebUI's OpenAI engine (aiohttp): fields decide; none of them -> OpenAI.
        (
            AIOHTTP_UA,
            {"model": "dall-e-2", "prompt": "p", "n": 1, "response_format": "b64_json"},
            "openai",
        ),
        ({}, {"prompt": "p"}, "openai"),
        ({}, {"prompt": "p", "steps": 4}, "together"),
        ({}, {"prompt": "p", "guidance": 2.0}, "together"),
        ({}, {"prompt": "p", "response_format": "base64"}, "together"),
        ({}, {"prompt": "p", "cache_interval": 3}, "imagine"),
        ({}, {"prompt": "p", "quality": "hd"}, "openai"),
        # The header always wins.
        ({"x-imagegen-dialect": "together"}, {"prompt": "p"}, "together"),
        ({"x-imagegen-dialect": "Imagine"}, {"prompt": "p", "steps": 3}, "imagine"),
        ({**TOGETHER_UA, "x-imagegen-dialect": "openai"}, {"prompt": "p"}, "openai"),
    ],
)
def test_detection(headers: dict[str, str], body: dict[str, Any], dialect: str) -> None:
    assert detect(headers, body) == dialect


@pytest.mark.parametrize(
    "headers,body",
    [
        (OPENAI_UA, {"prompt": "p", "steps": 4}),  # openai SDK with a Together field
        (TOGETHER_UA, {"prompt": "p", "seed_increment": 2}),
        ({}, {"prompt": "p", "width": 512, "cache_interval": 2}),
        ({}, {"prompt": "p", "background": "opaque", "steps": 3}),
    ],
)
def test_mixed_signals_are_refused_not_guessed(
    headers: dict[str, str], body: dict[str, Any]
) -> None:
    with pytest.raises(APIError) as info:
        detect(headers, body)
    assert info.value.status == 400 and info.value.code == "ambiguous_dialect"
    assert "x-imagegen-dialect" in info.value.message


def test_unknown_header_value_is_a_400() -> None:
    with pytest.raises(APIError) as info:
        detect({"x-imagegen-dialect": "midjourney"}, {"prompt": "p"})
    assert info.value.code == "invalid_dialect"
