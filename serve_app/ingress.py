"""The ingress deployment: shared state and the generate-then-encode path.

Routes live in ``serve_app/routes/`` (one module per API surface). They all use
:meth:`Ingress.generate_images`, which hands the model's response object straight
to the encoder, so pixels never travel back through here.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

from ray.serve.handle import DeploymentHandle, DeploymentResponse
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request

from deployments.storage import make_store, start_expiry
from serve_app.config import ImageServingArgs, ModelConfig
from serve_app.errors import APIError
from serve_app.http import http_exception_handler
from serve_app.image_catalog import ImageCatalog
from serve_app.job import EncodedImage, EncodeSpec, GenerationJob

logger = logging.getLogger("imagegen.ingress")


class Ingress:
    """Routes requests to per-model deployments and the encoder."""

    def __init__(
        self,
        args: ImageServingArgs | dict[str, Any],
        models: dict[str, DeploymentHandle],
        encoder: DeploymentHandle,
        signing_key: str,
    ) -> None:
        self.args = ImageServingArgs.model_validate(args)
        self.names = self.args.model_names()
        self.configs: dict[str, ModelConfig] = {m.id: m for m in self.args.models}
        self.default_model = self.args.resolve_default()
        self.models = models
        self.encoder = encoder
        # The same store the encoder writes to (local folder or S3), from the same factory.
        self.store = make_store(self.args.storage, signing_key)
        self.catalog = ImageCatalog(self.store)
        self.sweeper = start_expiry(self.store, self.args.storage)
        self.started = int(time.time())

    def __del__(self) -> None:
        sweeper = getattr(self, "sweeper", None)
        if sweeper is not None:
            sweeper.stop()

    def __serve_build_asgi_app__(self) -> Starlette:
        from serve_app.routes import all_routes

        return Starlette(
            routes=all_routes(self), exception_handlers={HTTPException: http_exception_handler}
        )

    def resolve_model(self, name: str | None) -> ModelConfig:
        """A model id or alias -> its config; ``None`` -> the default model; else 404."""
        if name is None:
            return self.configs[self.default_model]
        model_id = self.names.get(name)
        if model_id is None:
            raise APIError(
                "not_found",
                f"The model '{name}' does not exist. Available: {sorted(self.names)}.",
                param="model",
                code="model_not_found",
            )
        return self.configs[model_id]

    def base_url(self, request: Request) -> str:
        return self.args.ingress.public_base_url or str(request.base_url)

    async def generate_images(
        self, model: ModelConfig, job: GenerationJob, spec: EncodeSpec
    ) -> list[EncodedImage]:
        """Generate on the model deployment, encode on the encoder, within the deadline."""
        pixels = self.models[model.id].generate.remote(job)
        encoded = self.encoder.encode.remote(pixels, spec)
        return await self.within_deadline(pixels, encoded)

    async def within_deadline(self, *responses: DeploymentResponse) -> Any:
        """Await the last response; on timeout or disconnect, cancel them all."""
        try:
            return await asyncio.wait_for(
                _resolve(responses[-1]), timeout=self.args.ingress.request_timeout_s
            )
        except (TimeoutError, asyncio.CancelledError):
            for response in responses:
                response.cancel()
            raise


async def _resolve(response: DeploymentResponse) -> Any:
    return await response
