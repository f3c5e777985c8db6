"""The ingress deployment: shared state and the generate-then-encode path.

Routes live in ``serve_app/routes/`` (one module per API surface). They all use
:meth:`Ingress.generate_images`, which hands the model's response object straight
to the encoder, so pixels never travel back through here.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any

from ray.serve.handle import DeploymentHandle, DeploymentResponse
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request

from deployments.storage import make_store, start_expiry
from serve_app import limits
from serve_app.auth import ApiKeys, load_keys
from serve_app.config import ImageServingArgs, ModelConfig
from serve_app.errors import APIError, is_backpressure, model_starting
from serve_app.http import http_exception_handler
from serve_app.image_catalog import ImageCatalog
from serve_app.job import EncodedImage, EncodeSpec, GenerationJob
from serve_app.middleware import ingress_middleware
from serve_app.request_context import install_log_context

logger = logging.getLogger("imagegen.ingress")

# deployment name -> its RUNNING replicas; asked only when a queue is full.
ReplicaCounter = Callable[[str], Awaitable[int]]
REPLICA_COUNT_TTL_S = 1.0


class Ingress:
    """Routes requests to per-model deployments and the encoder."""

    def __init__(
        self,
        args: ImageServingArgs | dict[str, Any],
        models: dict[str, DeploymentHandle],
        encoder: DeploymentHandle,
        signing_key: str,
        running_replicas: ReplicaCounter | None = None,
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
        self._count_replicas = running_replicas or serve_running_replicas
        self._replica_counts: dict[str, tuple[float, int]] = {}
        install_log_context()
        # A missing required key stops the deployment here, at startup.
        self.api_keys = ApiKeys(load_keys(self.args.ingress.api_keys))
        logger.info("API keys %s", "on" if self.api_keys.enabled else "off")

    def __del__(self) -> None:
        sweeper = getattr(self, "sweeper", None)
        if sweeper is not None:
            sweeper.stop()

    def __serve_build_asgi_app__(self) -> Starlette:
        from serve_app.openapi import openapi_route
        from serve_app.routes import all_routes

        routes = all_routes(self)
        return Starlette(
            routes=[*routes, openapi_route(routes)],
            middleware=ingress_middleware(self.args.ingress, self.args.images, self.api_keys),
            exception_handlers={HTTPException: http_exception_handler},
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
        limits.check_job(model, job, spec)
        pixels = self.models[model.id].generate.remote(job)
        encoded = self.encoder.encode.remote(pixels, spec)
        try:
            return await self.within_deadline(pixels, encoded)
        except Exception as exc:
            # A full queue while the model has no running replica is a cold start
            # (503), not an overload of busy replicas (429): see errors.ERROR_TABLE.
            if is_backpressure(exc) and await self._is_cold(model):
                raise model_starting(model.id, model.cold_start_retry_after_s) from None
            raise

    async def _is_cold(self, model: ModelConfig) -> bool:
        try:
            return await self.running_replicas(model) == 0
        except Exception:  # noqa: BLE001 - the overload answer (429) still stands
            logger.warning("could not count replicas of %s", model.id, exc_info=True)
            return False

    async def running_replicas(self, model: ModelConfig) -> int:
        """RUNNING replicas of a model's deployment, cached briefly (a burst of
        rejections must not turn into a burst of controller calls)."""
        name = model.deployment_name()
        now = time.monotonic()
        cached = self._replica_counts.get(name)
        if cached is not None and now - cached[0] < REPLICA_COUNT_TTL_S:
            return cached[1]
        count = await self._count_replicas(name)
        self._replica_counts[name] = (now, count)
        return count

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


async def serve_running_replicas(deployment: str) -> int:
    """Ask Serve's controller how many replicas of a deployment in this app run."""
    from ray import serve

    app = serve.get_replica_context().app_name
    status = await asyncio.to_thread(serve.status)
    overview = status.applications[app].deployments.get(deployment)
    # ReplicaState is a str enum, so its plain name finds the count.
    return 0 if overview is None else overview.replica_states.get("RUNNING", 0)  # type: ignore[call-overload]
