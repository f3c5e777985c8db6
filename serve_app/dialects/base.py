"""What every dialect shares: free sizes, ignored-field logging, the dialect record.

A dialect only translates: a request body into the canonical :class:`GenerationJob`
and :class:`EncodeSpec`, and the encoded images back into its response shape.
Batching, generation and encoding are the same code for all of them.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from common.errors import APIError, invalid
from common.job import EncodedImage, EncodeSpec, GenerationJob
from common.model_config import ModelConfig
from serve_app.streaming.sse import StreamFormat

logger = logging.getLogger("imagegen.dialects")

DialectName = Literal["openai", "together", "imagine"]


@dataclass(frozen=True)
class Dialect:
    """One request/response shape on ``POST /v1/images/generations``.

    Attributes:
        name: what ``X-Imagegen-Dialect`` names and the response header reports.
        parse: JSON body -> validated request model (raises a 400 ``APIError``).
        model_name: the request's model id or alias (``None``: the default model).
        to_job: request, model, request id -> the canonical job.
        to_encode_spec: request, model, request id, base URL -> how to encode.
        build_response: request, model, job, encoded images -> the JSON body.
        stream_format: request, model, job, encode spec -> how its server-sent events look,
            or ``None`` when the request did not ask for a stream.
        image_url: the request's init image URL (image-to-image), or None.
        strength: the request's img2img strength, or None for the configured default.
    """

    name: DialectName
    parse: Callable[[Any], Any]
    model_name: Callable[[Any], str | None]
    to_job: Callable[[Any, ModelConfig, str], GenerationJob]
    to_encode_spec: Callable[[Any, ModelConfig, str, str | None], EncodeSpec]
    build_response: Callable[
        [Any, ModelConfig, GenerationJob, Sequence[EncodedImage]], dict[str, Any]
    ]
    stream_format: Callable[[Any, ModelConfig, GenerationJob, EncodeSpec], StreamFormat | None] = (
        lambda req, model, job, spec: None
    )
    image_url: Callable[[Any], str | None] = lambda req: None
    strength: Callable[[Any], float | None] = lambda req: None


def free_size(
    model: ModelConfig, width: int, height: int, params: tuple[str, str] = ("width", "height")
) -> tuple[int, int]:
    """Check a free ``width`` x ``height`` against the model; return the generation size.

    ``params`` names the two fields in the dialect (``("size", "size")`` for imagine).
    """
    reason = model.free_size_error(width, height)
    if reason:
        param = params[1] if height > model.max_side >= width else params[0]
        raise invalid(f"Invalid {param}: {reason}.", param=param, code="invalid_size")
    return model.free_generation_size(width, height)


def default_steps(model: ModelConfig, dialect_default: int) -> int:
    """A dialect's documented default step count, unless the model cannot run that many
    (a 4-step distilled model with ``max_steps: 8``): then the model's own default."""
    return dialect_default if dialect_default <= model.max_steps else model.default_steps


def log_ignored(request_id: str, dialect: str, fields: Sequence[str]) -> None:
    if fields:
        logger.info("request %s (%s): ignoring fields %s", request_id, dialect, list(fields))


def unsupported(param: str, message: str) -> APIError:
    return invalid(message, param=param, code="unsupported_parameter")
