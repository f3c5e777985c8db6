"""The dialects of ``POST /v1/images/generations``, by the name ``detect.py`` returns.

Every other dialect has routes of its own and is named there directly: OpenAI edits
and variations (``openai_edits``), the imagine images API (``imagine_api``) and
AUTOMATIC1111 (``a1111``, ``a1111_img2img``). All of them are :class:`Dialect` records.
"""

from __future__ import annotations

from typing import Any

from serve_app.dialects import imagine_sdk, openai, together
from serve_app.dialects.base import Dialect, DialectName

REGISTRY: dict[DialectName, Dialect[Any, dict[str, Any]]] = {
    "openai": openai.DIALECT,
    "together": together.DIALECT,
    "imagine": imagine_sdk.DIALECT,
}
