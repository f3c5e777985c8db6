"""The imagine SDK's stream: one whole ``ImageResponse`` per event, then ``[DONE]``.

The SDK (``images_generate_stream``) reads ``data:`` lines until ``data: [DONE]``.
Each preview step is a response with an extra ``partial_image_index``; the last is
the response with the finished images. An error part-way is a ``data:`` line
holding an OpenAI error object, which the SDK fails to read as an ``ImageResponse``
and raises.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from common.errors import APIError
from common.job import EncodedImage, ImageEvent
from serve_app.streaming.sse import sse

Respond = Callable[[Sequence[EncodedImage]], dict[str, Any]]


class ImagineStream:
    """``respond`` builds the dialect's JSON response for a set of encoded images."""

    def __init__(self, respond: Respond) -> None:
        self.respond = respond

    def frames(self, event: ImageEvent, images: Sequence[EncodedImage]) -> list[str]:
        response = self.respond(images)
        if event.kind == "partial":
            response["partial_image_index"] = event.partial_index or 0
        return [sse(response)]

    def error(self, err: APIError) -> str:
        return sse(err.body())

    def end(self) -> list[str]:
        return [sse("[DONE]")]
