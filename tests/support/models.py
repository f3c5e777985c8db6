"""The model config the dialect tests translate against (no engine is built from it)."""

from __future__ import annotations

from typing import Any

from common.model_config import ModelConfig

# What every dialect test assumes unless it says otherwise: 1/8 generation scale
# (1024 -> 128), 50 steps at most, guidance 5.
DIALECT_MODEL: dict[str, Any] = {
    "id": "tiny",
    "source": "builtin:tiny-sdxl",
    "generation_scale": 0.125,
    "default_steps": 20,
    "max_steps": 50,
    "default_guidance": 5.0,
    "max_images_per_request": 4,
}


def dialect_model(**overrides: Any) -> ModelConfig:
    return ModelConfig.model_validate({**DIALECT_MODEL, **overrides})
