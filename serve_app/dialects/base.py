"""The one contract every dialect meets, and what they all share.

A dialect only translates. :class:`Dialect` ``parse`` turns a body into its request
model, ``model_name`` says which model it asks for, and ``translate`` turns the
request and the chosen model into a :class:`Translation`: the canonical
:class:`GenerationJob`, the :class:`EncodeSpec`, how to shape the encoded images
into the response, and the stream format when the request asked for a stream.
Every route then does the same four things: parse, resolve the model, translate,
run the translation through the ingress. Batching, generation and encoding are the
same code for all of them.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Generic, Literal, TypeVar

from common.errors import APIError, invalid
from common.job import EncodedImage, EncodeSpec, GenerationJob, LoraRef, Priority, SchedulerSpec
from common.model_config import ModelConfig
from serve_app.asgi.scheduling import Scheduling

if TYPE_CHECKING:
    from common.config import ImageInputConfig
    from serve_app.inputs.fetch import ImageFetcher
    from serve_app.streaming.sse import StreamFormat

logger = logging.getLogger("imagegen.dialects")

DialectName = Literal["openai", "together", "imagine"]
Req = TypeVar("Req")
Out = TypeVar("Out")


@dataclass(frozen=True)
class Context:
    """What a translation may need beyond the request and the model.

    Attributes:
        request_id: the request's id (the job's, the logs').
        images: input-image limits and img2img strength defaults.
        base_url: where ``url`` outputs point (``None``: the dialect never returns URLs).
        fetcher: the SSRF-safe fetcher for image URLs (Together's ``image_url``).
        owner: whose stored images these are (the imagine images API).
        scheduling: the class header, the key's limit and the deadline (applied to
            every dialect's job by ``routes/answer.py``).
    """

    request_id: str
    images: ImageInputConfig
    base_url: str | None = None
    fetcher: ImageFetcher | None = None
    owner: str | None = None
    scheduling: Scheduling = Scheduling()


@dataclass(frozen=True)
class Translation(Generic[Out]):
    """A request translated: what to generate, how to encode it, how to answer.

    Attributes:
        job: the canonical job for the model deployment.
        spec: how the encoder writes the images.
        respond: the encoded images -> the dialect's response (a JSON body, or for the
            imagine images API the record to save).
        stream: the server-sent-event format, or ``None`` for a plain response.
        lora_param: adapter index -> the request field that named it (for errors found
            when an adapter is fetched or loaded).
    """

    job: GenerationJob
    spec: EncodeSpec
    respond: Callable[[Sequence[EncodedImage]], Out]
    stream: StreamFormat | None = None
    lora_param: Callable[[int], str] = "loras[{}].name".format


@dataclass(frozen=True)
class Dialect(Generic[Req, Out]):
    """One client dialect, whatever route serves it.

    Attributes:
        name: the dialect's name (``X-Imagegen-Dialect`` on the generations route).
        parse: body (JSON, or the edits' multipart form) -> validated request (4xx).
        model_name: the request's model id or alias (``None`` or ``""``: the default).
        translate: request, model, context -> the translation (may decode or fetch
            input images, so it is awaited).
        priority: the request's ``priority`` field (``None``: not sent).
    """

    name: str
    parse: Callable[[Any], Req]
    model_name: Callable[[Req], str | None]
    translate: Callable[[Req, ModelConfig, Context], Awaitable[Translation[Out]]]
    priority: Callable[[Req], Priority | None] = lambda req: req.priority  # type: ignore[attr-defined]


def new_job(
    model: ModelConfig,
    request_id: str,
    *,
    prompt: str,
    seeds: tuple[int, ...],
    gen_size: tuple[int, int],
    steps: int,
    guidance: float | None,
    negative_prompt: str | None = None,
    scheduler: SchedulerSpec | None = None,
    cache_interval: int | None = None,
    partial_images: int = 0,
    loras: tuple[LoraRef, ...] = (),
) -> GenerationJob:
    """The canonical job from values a dialect has already resolved and checked.

    The one default filled in here is the model's guidance for ``guidance=None``, so
    that every dialect means the same by "not sent".
    """
    return GenerationJob(
        request_id=request_id,
        prompt=prompt,
        negative_prompt=negative_prompt,
        seeds=seeds,
        gen_width=gen_size[0],
        gen_height=gen_size[1],
        steps=steps,
        guidance=float(model.default_guidance if guidance is None else guidance),
        scheduler=scheduler,
        cache_interval=cache_interval,
        partial_images=partial_images,
        loras=loras,
    )


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
    """One log line naming every accepted-but-ignored field (clients keep adding them)."""
    if fields:
        logger.info("request %s (%s): ignoring fields %s", request_id, dialect, list(fields))


def unsupported(param: str, message: str) -> APIError:
    return invalid(message, param=param, code="unsupported_parameter")
