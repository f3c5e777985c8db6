"""Which dialect a ``POST /v1/images/generations`` request speaks. One rule, in order:

1. The header ``X-Imagegen-Dialect: openai | together | imagine`` decides, when sent.
2. Otherwise every signal in the request names a dialect:
   - ``User-Agent`` ``OpenAI/...`` (openai SDK), ``Together/...`` (together SDK),
     ``python-imagine-sdk/...`` (imagine SDK);
   - a field only one dialect has: Together's ``steps``, ``width``, ``height``,
     ``guidance``, ``image_url``, ``image_loras``, ``reference_images``,
     ``disable_safety_checker`` or ``response_format: "base64"``; imagine's
     ``seed_increment`` or ``cache_interval``; OpenAI's ``output_compression``,
     ``background``, ``quality``, ``style``, ``moderation``, ``user``, ``partial_images``.
3. All signals agree: that dialect. None: OpenAI. They disagree: a 400 that lists
   them and asks for the header; the server never guesses between two dialects.

Shared fields (``prompt``, ``model``, ``n``, ``seed``, ``size``, ``negative_prompt``,
``guidance_scale``, ``num_inference_steps``, ...) are no signal.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from common.errors import invalid
from serve_app.dialects.base import DialectName
from serve_app.dialects.imagine_sdk import IMAGINE_ONLY_FIELDS
from serve_app.dialects.together import TOGETHER_ONLY_FIELDS

DIALECT_HEADER = "x-imagegen-dialect"
DIALECTS: tuple[DialectName, ...] = ("openai", "together", "imagine")
OPENAI_ONLY_FIELDS = frozenset(
    {"output_compression", "background", "quality", "style", "moderation", "user", "partial_images"}
)
USER_AGENTS: dict[str, DialectName] = {
    "openai/": "openai",
    "together/": "together",
    "python-imagine-sdk/": "imagine",
}
_FIELDS: dict[DialectName, frozenset[str]] = {
    "openai": OPENAI_ONLY_FIELDS,
    "together": TOGETHER_ONLY_FIELDS,
    "imagine": IMAGINE_ONLY_FIELDS,
}


def signals(headers: Mapping[str, str], body: Any) -> dict[DialectName, list[str]]:
    """Each dialect the request points at, with the evidence (for the error message)."""
    found: dict[DialectName, list[str]] = {}
    agent = headers.get("user-agent", "").lower()
    for prefix, dialect in USER_AGENTS.items():
        if agent.startswith(prefix):
            found.setdefault(dialect, []).append(f"User-Agent {prefix.rstrip('/')}")
    if isinstance(body, dict):
        for dialect, fields in _FIELDS.items():
            # A null is "the default", so no signal (raw clients send every field).
            present = sorted(f for f in fields & body.keys() if body[f] is not None)
            if present:
                found.setdefault(dialect, []).extend(f"field {f!r}" for f in present)
        if body.get("response_format") == "base64":
            found.setdefault("together", []).append("response_format 'base64'")
    return found


def detect(headers: Mapping[str, str], body: Any) -> DialectName:
    """Apply the rule above; raise a 400 for an unknown header value or mixed signals."""
    explicit = headers.get(DIALECT_HEADER)
    if explicit is not None:
        name = explicit.strip().lower()
        if name not in DIALECTS:
            raise invalid(
                f"Unknown {DIALECT_HEADER} {explicit!r}; use one of {list(DIALECTS)}.",
                code="invalid_dialect",
            )
        return name  # type: ignore[return-value]
    found = signals(headers, body)
    if len(found) > 1:
        evidence = "; ".join(f"{d}: {', '.join(why)}" for d, why in found.items())
        raise invalid(
            f"This request mixes dialects ({evidence}). Remove the other dialect's "
            f"fields, or name one with the header '{DIALECT_HEADER}: "
            f"{' | '.join(DIALECTS)}'.",
            code="ambiguous_dialect",
        )
    if found:
        return next(iter(found))
    return "openai"
