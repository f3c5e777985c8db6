"""Server-sent events for ``stream=true``: previews while the image forms, then the finals.

The model deployment streams events from inside its batch; each event's pixels
come through here to the encoder (see ``ModelServer.generate_stream`` for why they
are not object references). Previews are encoded with the encoder's fast preview
settings. A dialect decides only how the frames look (:class:`StreamFormat`): OpenAI's
``image_generation.*`` events here, the imagine SDK's ``data:`` lines in its own
module. An error after the stream has started becomes an in-band error frame and
the stream ends. If the client goes away, the model request is cancelled.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import AsyncIterator, Sequence
from typing import TYPE_CHECKING, Any, Protocol

from pydantic import BaseModel

from serve_app.errors import APIError, from_exception
from serve_app.job import EncodedImage, EncodeSpec, GenerationJob, ImageEvent
from serve_app.protocol import (
    ImageGenCompletedEvent,
    ImageGenerateRequest,
    ImageGenPartialImageEvent,
    dump,
)

if TYPE_CHECKING:
    from serve_app.config import ModelConfig
    from serve_app.edits import ImageEditRequest
    from serve_app.ingress import Ingress

logger = logging.getLogger("imagegen.streaming")

SSE_HEADERS = {"cache-control": "no-cache", "x-accel-buffering": "no"}


def sse(data: BaseModel | dict[str, Any] | str, event: str | None = None) -> str:
    """One SSE frame; ``data`` is JSON-encoded unless it is already a string."""
    if isinstance(data, str):
        payload = data
    else:
        body = dump(data) if isinstance(data, BaseModel) else data
        payload = json.dumps(body, separators=(",", ":"))
    head = f"event: {event}\n" if event else ""
    return f"{head}data: {payload}\n\n"


class StreamFormat(Protocol):
    """How one dialect writes a stream: frames per model event, an error, the end."""

    def frames(self, event: ImageEvent, images: Sequence[EncodedImage]) -> list[str]: ...

    def error(self, err: APIError) -> str: ...

    def end(self) -> list[str]: ...


class OpenAIStream:
    """``image_generation.partial_image`` per preview, ``.completed`` per finished image.

    Edits and variations use ``image_edit.*`` names. Errors are ``event: error`` frames with an
    OpenAI error object, which the openai SDK raises as an ``APIError``.
    """

    def __init__(
        self, req: ImageGenerateRequest | ImageEditRequest, job: GenerationJob, spec: EncodeSpec
    ) -> None:
        self.job = job
        self.prefix = "image_generation" if isinstance(req, ImageGenerateRequest) else "image_edit"
        self.common: dict[str, Any] = {
            "background": "opaque",
            "output_format": req.output_format,
            "quality": req.quality,
            "size": f"{spec.width}x{spec.height}",
        }

    def frames(self, event: ImageEvent, images: Sequence[EncodedImage]) -> list[str]:
        now = int(time.time())
        frames = []
        for index, image in enumerate(images):
            if image.b64_json is None:
                raise RuntimeError("the encoder returned no b64_json for a streamed image")
            if event.kind == "partial":
                name = f"{self.prefix}.partial_image"
                data: BaseModel = ImageGenPartialImageEvent(
                    type=name,
                    b64_json=image.b64_json,
                    partial_image_index=event.partial_index or 0,
                    created_at=now,
                    image_index=index,
                    **self.common,
                )
            else:
                name = f"{self.prefix}.completed"
                data = ImageGenCompletedEvent(
                    type=name,
                    b64_json=image.b64_json,
                    created_at=now,
                    image_index=index,
                    seed=self.job.seeds[index],
                    **self.common,
                )
            frames.append(sse(data, name))
        return frames

    def error(self, err: APIError) -> str:
        return sse({"type": "error", "error": err.body()["error"]}, "error")

    def end(self) -> list[str]:
        return []


async def generation_events(
    ingress: Ingress,
    model: ModelConfig,
    job: GenerationJob,
    spec: EncodeSpec,
    fmt: StreamFormat,
) -> AsyncIterator[str]:
    """Yield SSE frames for one streamed request, within the request deadline."""
    stream = ingress.models[model.id].options(stream=True).generate_stream.remote(job)
    finished = False
    try:
        async with asyncio.timeout(ingress.args.ingress.request_timeout_s):
            async for event in stream:
                preview = event.kind == "partial"
                images = await ingress.encoder.encode.remote(event.pixels, spec, preview)
                for frame in fmt.frames(event, images):
                    yield frame
        finished = True
    except asyncio.CancelledError:
        raise
    except Exception as exc:  # noqa: BLE001 - reported in-band, the status line is sent
        yield fmt.error(from_exception(exc, job.request_id))
        return
    finally:
        if not finished:
            stream.cancel()
    for frame in fmt.end():
        yield frame
