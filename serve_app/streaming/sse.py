"""Server-sent events: the frame format, the stream-format contract, the response.

The model deployment streams events from inside its batch; :meth:`Ingress.stream_images`
sends each event's pixels to the encoder and hands the encoded images to a
:class:`StreamFormat`, which decides only how the frames look: OpenAI's
``image_generation.*`` events (``streaming/openai.py``) or the imagine SDK's ``data:``
lines (``streaming/imagine.py``). An error after the stream has started becomes an
in-band error frame and the stream ends.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Sequence
from typing import Any, Protocol

from pydantic import BaseModel
from starlette.responses import StreamingResponse

from common.errors import APIError
from common.job import EncodedImage, ImageEvent
from serve_app.protocol.openai import dump

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


def sse_response(events: AsyncIterator[str], headers: dict[str, str]) -> StreamingResponse:
    """The ``text/event-stream`` response for a stream of frames."""
    return StreamingResponse(
        events, media_type="text/event-stream", headers={**SSE_HEADERS, **headers}
    )
