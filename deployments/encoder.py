"""The encoder deployment: uint8 pixels -> png/jpeg/webp -> ``b64_json`` or a stored URL.

It receives the model deployment's response object directly, so pixels go from
the model replica to the encoder without passing through the ingress.
"""

from __future__ import annotations

import base64
from typing import Any

import numpy as np

from deployments.codec import encode_image
from deployments.storage import LocalImageStore, UrlSigner
from serve_app.config import StorageConfig
from serve_app.job import EncodedImage, EncodeSpec


class Encoder:
    """CPU-only; scales with request rate and bytes, independently of the GPUs."""

    def __init__(self, storage: StorageConfig | dict[str, Any], signing_key: str) -> None:
        config = StorageConfig.model_validate(storage)
        self.store = LocalImageStore(config.local_dir, UrlSigner(signing_key, config.url_ttl_s))

    def encode(self, pixels: np.ndarray, spec: EncodeSpec) -> list[EncodedImage]:
        """Encode every image of one job, in order."""
        results = []
        for image in pixels:
            data = encode_image(
                image, spec.width, spec.height, spec.output_format, spec.compression
            )
            if spec.response_format == "b64_json":
                encoded = base64.b64encode(data).decode("ascii")
                results.append(EncodedImage(b64_json=encoded, byte_size=len(data)))
            else:
                if spec.base_url is None:
                    raise ValueError("url output needs a base_url")
                key = self.store.put(data, spec.output_format)
                url = self.store.url_for(key, spec.base_url)
                results.append(EncodedImage(url=url, byte_size=len(data)))
        return results

    def ready(self) -> bool:
        return True
