"""The model replica's side of encoding: its rows go to the encoder deployment from
here, and only encoded images go back to the caller.

Before this, pixels travelled model -> ingress -> encoder -> ingress on the streamed
and observed paths. Now the replica calls the encoder itself (uint8 arrays only, by
the handle the app binds in ``serve_app/app.py``) and answers the ingress with
``EncodedImage``s: base64 bytes, URLs or store keys. The byte counters are what
``stats()`` reports and what the end-to-end test reads.
"""

from __future__ import annotations

import contextlib
import dataclasses
import pickle
from collections.abc import AsyncIterator
from typing import Any

import numpy as np

from common.job import EncodedImage, EncodeSpec, ImageEvent


class EncoderLink:
    """Sends one replica's pixels to the encoder deployment and counts what crossed."""

    def __init__(self, encoder: Any | None) -> None:
        self.encoder = encoder
        # uint8 pixel bytes sent to the encoder, and the pickled bytes of everything
        # answered to callers (encoded images, stream events).
        self.counters = {"pixel_bytes_to_encoder": 0, "bytes_to_callers": 0}

    async def encode(
        self, pixels: np.ndarray, spec: EncodeSpec, preview: bool = False
    ) -> list[EncodedImage]:
        """One job's rows (or its previews) encoded as ``spec`` says."""
        if self.encoder is None:
            raise RuntimeError("this model replica has no encoder handle (see serve_app.app)")
        if pixels.dtype != np.uint8:
            raise TypeError(f"pixels leave the replica as uint8, not {pixels.dtype}")
        self.counters["pixel_bytes_to_encoder"] += pixels.nbytes
        return await self.encoder.encode.remote(pixels, spec, preview)

    async def events(
        self, events: AsyncIterator[ImageEvent], spec: EncodeSpec
    ) -> AsyncIterator[ImageEvent]:
        """``events`` with each preview and final's pixels replaced by encoded images."""
        async with contextlib.aclosing(events):
            async for event in events:
                if event.kind in ("partial", "final"):
                    images = await self.encode(event.pixels, spec, event.kind == "partial")
                    event = dataclasses.replace(event, pixels=None, images=tuple(images))
                yield self.answered(event)

    def answered(self, value: Any) -> Any:
        """Count the pickled size of what goes back to the caller."""
        with contextlib.suppress(Exception):  # an exception inside an event may not pickle
            self.counters["bytes_to_callers"] += len(pickle.dumps(value))
        return value
