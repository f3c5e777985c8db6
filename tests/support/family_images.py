"""Inputs and comparisons the family faithfulness tests share (SIZE x SIZE images)."""

from __future__ import annotations

from typing import Any

import numpy as np

SIZE = 64


def init_image(seed: int = 7, size: int = SIZE) -> np.ndarray:
    """A seeded random RGB init image."""
    return np.random.default_rng(seed).integers(0, 256, (size, size, 3), dtype=np.uint8)


def half_mask(size: int = SIZE) -> np.ndarray:
    """255 (repaint) on the right half, 0 (keep) on the left."""
    mask = np.zeros((size, size), np.uint8)
    mask[:, size // 2 :] = 255
    return mask


def to_uint8(images: Any) -> np.ndarray:
    """A pipeline's float images in [0, 1] -> uint8, as the server rounds them."""
    return (np.asarray(images) * 255.0).round().clip(0, 255).astype(np.uint8)


def mean_diff(a: np.ndarray, b: np.ndarray) -> float:
    """Mean absolute difference in uint8 levels."""
    return float(np.abs(a.astype(float) - b.astype(float)).mean())
