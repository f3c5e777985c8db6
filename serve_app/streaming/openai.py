"""OpenAI's image stream: ``*.partial_image`` per preview, ``*.completed`` per image.

Generations use ``image_generation.*`` event names, edits and variations
``image_edit.*``. Errors are ``event: error`` frames with an OpenAI error object,
which the openai SDK raises as an ``APIError``.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any, Literal

from pydantic import BaseModel

from common.errors import APIError
from common.job import EncodedImage, EncodeSpec, GenerationJob, ImageEvent
from serve_app.protocol.openai import (
    ImageGenCompletedEvent,
    ImageGenPartialImageEvent,
    ImageUsage,
)
from serve_app.streaming.sse import sse


class OpenAIStream:
    """The frames of one streamed generation or edit."""

    def __init__(
        self,
        prefix: Literal["image_generation", "image_edit"],
        job: GenerationJob,
        spec: EncodeSpec,
        quality: str | None,
        usage: ImageUsage | None = None,
    ) -> None:
        self.job = job
        self.prefix = prefix
        # The whole request's usage, on every completed event.
        self.usage = usage
        self.common: dict[str, Any] = {
            "background": "opaque",
            "output_format": spec.output_format,
            "quality": quality or "auto",
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
                    priority=self.job.priority,
                    paused_ms=round(event.paused_ms, 1),
                    usage=self.usage,
                    **self.common,
                )
            frames.append(sse(data, name))
        return frames

    def error(self, err: APIError) -> str:
        return sse({"type": "error", "error": err.body()["error"]}, "error")

    def end(self) -> list[str]:
        return []
