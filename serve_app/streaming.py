"""Server-sent events for ``stream=true``: previews, then one completed event per image.

The model deployment streams events from inside its batch; each event's pixels
come through here to the encoder (see ``ModelServer.generate_stream`` for why they
are not object references). An error after
the stream has started becomes an ``error`` event the openai SDK raises, and the
stream ends. If the client goes away, the model request is cancelled.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel

from serve_app.errors import from_exception
from serve_app.job import EncodeSpec, GenerationJob, ImageEvent
from serve_app.protocol import (
    ImageGenCompletedEvent,
    ImageGenerateRequest,
    ImageGenPartialImageEvent,
    dump,
)

if TYPE_CHECKING:
    from serve_app.config import ModelConfig
    from serve_app.ingress import Ingress

logger = logging.getLogger("imagegen.streaming")

SSE_HEADERS = {"cache-control": "no-cache", "x-accel-buffering": "no"}


def sse(event: str, data: BaseModel | dict[str, Any]) -> str:
    payload = dump(data) if isinstance(data, BaseModel) else data
    return f"event: {event}\ndata: {json.dumps(payload, separators=(',', ':'))}\n\n"


async def generation_events(
    ingress: Ingress,
    model: ModelConfig,
    req: ImageGenerateRequest,
    job: GenerationJob,
    spec: EncodeSpec,
    prefix: str = "image_generation",
) -> AsyncIterator[str]:
    """Yield SSE frames for one streamed request, within the request deadline."""
    common = {
        "background": "opaque",
        "output_format": req.output_format,
        "quality": req.quality,
        "size": f"{spec.width}x{spec.height}",
    }
    stream = ingress.models[model.id].options(stream=True).generate_stream.remote(job)
    finished = False
    try:
        async with asyncio.timeout(ingress.args.ingress.request_timeout_s):
            async for event in stream:
                for frame in await _frames(ingress, event, spec, job, common, prefix):
                    yield frame
        finished = True
    except asyncio.CancelledError:
        raise
    except Exception as exc:  # noqa: BLE001 - reported in-band, the status line is sent
        err = from_exception(exc, job.request_id)
        yield sse("error", {"type": "error", "error": err.body()["error"]})
    finally:
        if not finished:
            stream.cancel()


async def _frames(
    ingress: Ingress,
    event: ImageEvent,
    spec: EncodeSpec,
    job: GenerationJob,
    common: dict[str, Any],
    prefix: str,
) -> list[str]:
    """Encode one model event (previews or finals) into SSE frames, one per image."""
    encoded = await ingress.encoder.encode.remote(event.pixels, spec)
    now = int(time.time())
    frames = []
    for index, image in enumerate(encoded):
        if image.b64_json is None:
            raise RuntimeError("the encoder returned no b64_json for a streamed image")
        if event.kind == "partial":
            data: BaseModel = ImageGenPartialImageEvent(
                type=f"{prefix}.partial_image",
                b64_json=image.b64_json,
                partial_image_index=event.partial_index or 0,
                created_at=now,
                image_index=index,
                **common,
            )
            frames.append(sse(f"{prefix}.partial_image", data))
        else:
            data = ImageGenCompletedEvent(
                type=f"{prefix}.completed",
                b64_json=image.b64_json,
                created_at=now,
                image_index=index,
                seed=job.seeds[index],
                **common,
            )
            frames.append(sse(f"{prefix}.completed", data))
    return frames
