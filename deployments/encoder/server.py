"""The encoder deployment: uint8 pixels -> png/jpeg/webp -> ``b64_json``, a URL, or a stored key.

It receives the model deployment's response object directly, so pixels go from
the model replica to the encoder without passing through the ingress. It writes
to the configured image store (local folder or S3); the ingress reads from it.
"""

from __future__ import annotations

import base64
import time
from typing import Any

import numpy as np

from common.config import StorageConfig
from common.formats import CONTENT_TYPES
from common.job import EncodedImage, EncodeSpec
from common.request_context import install_log_context
from deployments.encoder.codec import encode_image, paste_outside_mask
from deployments.metrics import EncoderMetrics
from storage.base import output_key
from storage.factory import make_store


class Encoder:
    """CPU-only; scales with request rate and bytes, independently of the GPUs."""

    def __init__(self, storage: StorageConfig | dict[str, Any], signing_key: str) -> None:
        install_log_context()
        self.config = StorageConfig.model_validate(storage)
        self.store = make_store(self.config, signing_key)
        self.metrics = EncoderMetrics()

    def encode(
        self, pixels: np.ndarray, spec: EncodeSpec, preview: bool = False
    ) -> list[EncodedImage]:
        """Encode every image of one job, in order (``preview``: a streamed preview)."""
        started = time.perf_counter()
        results = self._encode(pixels, spec, preview)
        elapsed_ms = (time.perf_counter() - started) * 1000
        self.metrics.encode_ms.observe(elapsed_ms, tags={"format": spec.output_format})
        return results

    def _encode(self, pixels: np.ndarray, spec: EncodeSpec, preview: bool) -> list[EncodedImage]:
        if spec.response_format == "stored" and len(spec.store_keys) != len(pixels):
            raise ValueError(f"{len(pixels)} images but {len(spec.store_keys)} store keys")
        results = []
        for index, image in enumerate(pixels):
            if spec.overlay is not None:
                overlay = spec.overlay
                image = paste_outside_mask(
                    image, overlay.image, overlay.mask, spec.width, spec.height
                )
            text = spec.png_text[index] if index < len(spec.png_text) and not preview else None
            data = encode_image(
                image, spec.width, spec.height, spec.output_format, spec.compression, preview, text
            )
            content_type = CONTENT_TYPES[spec.output_format]
            if spec.response_format == "b64_json":
                encoded = base64.b64encode(data).decode("ascii")
                results.append(EncodedImage(b64_json=encoded, byte_size=len(data)))
            elif spec.response_format == "stored":
                key = spec.store_keys[index]
                self.store.put(key, data, content_type, _provenance(spec))
                results.append(EncodedImage(key=key, byte_size=len(data)))
            else:
                key = output_key(spec.output_format)
                self.store.put(key, data, content_type, _provenance(spec))
                url = self.store.presign(key, self.config.url_ttl_s, spec.base_url)
                results.append(EncodedImage(url=url, byte_size=len(data)))
        return results

    def ready(self) -> bool:
        return True


def _provenance(spec: EncodeSpec) -> dict[str, str]:
    """Object metadata naming the request that made the image (when it is plain ASCII)."""
    rid = spec.request_id
    return {"request-id": rid} if rid.isascii() and len(rid) <= 128 else {}
