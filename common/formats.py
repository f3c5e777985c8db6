"""Image formats the server writes, and their media types (shared by every layer)."""

from __future__ import annotations

from typing import Literal

OutputFormat = Literal["png", "jpeg", "webp"]
CONTENT_TYPES: dict[str, str] = {"png": "image/png", "jpeg": "image/jpeg", "webp": "image/webp"}
