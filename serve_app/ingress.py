"""The ingress deployment: HTTP routes, model routing, and the response format.

It validates, builds the canonical job, and hands the model's response object
straight to the encoder, so pixels never travel back through here.
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
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from deployments.storage import FILES_ROUTE, LocalImageStore, UrlSigner, content_type_for
from serve_app import openai_images
from serve_app.config import ImageServingArgs, ModelConfig
from serve_app.errors import APIError
from serve_app.http import api_endpoint, http_exception_handler, read_json, request_id_of
from serve_app.protocol import ModelCard, ModelList, dump

logger = logging.getLogger("imagegen.ingress")

READY_TIMEOUT_S = 5.0


class Ingress:
    """Routes OpenAI-shaped requests to per-model deployments and the encoder."""

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
        signer = UrlSigner(signing_key, self.args.storage.url_ttl_s)
        self.store = LocalImageStore(self.args.storage.local_dir, signer)
        self.started = int(time.time())

    def __serve_build_asgi_app__(self) -> Starlette:
        routes = [
            Route("/v1/images/generations", api_endpoint(self.generations), methods=["POST"]),
            Route("/v1/models", api_endpoint(self.list_models), methods=["GET"]),
            Route("/v1/models/{model:path}", api_endpoint(self.get_model), methods=["GET"]),
            Route(FILES_ROUTE + "/{key}", api_endpoint(self.get_file), methods=["GET"]),
            Route("/health", self.health, methods=["GET"]),
            Route("/ready", api_endpoint(self.ready), methods=["GET"]),
        ]
        return Starlette(routes=routes, exception_handlers={HTTPException: http_exception_handler})

    # -- helpers ---------------------------------------------------------------

    def resolve_model(self, name: str | None) -> ModelConfig:
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

    async def _await(self, *responses: DeploymentResponse) -> Any:
        """Await the last response within the request deadline; cancel all on timeout."""
        try:
            return await asyncio.wait_for(
                _resolve(responses[-1]), timeout=self.args.ingress.request_timeout_s
            )
        except (TimeoutError, asyncio.CancelledError):
            for response in responses:
                response.cancel()
            raise

    # -- routes ----------------------------------------------------------------

    async def generations(self, request: Request) -> Response:
        request_id = request_id_of(request)
        body = await read_json(request, self.args.ingress.max_body_bytes)
        req = openai_images.parse_generate(body)
        model = self.resolve_model(req.model)
        job = openai_images.to_job(req, model, request_id)
        spec = openai_images.to_encode_spec(req, request_id, self.base_url(request))
        pixels = self.models[model.id].generate.remote(job)
        encoded = self.encoder.encode.remote(pixels, spec)
        images = await self._await(pixels, encoded)
        payload = openai_images.build_response(req, job.seeds, images)
        headers = {"x-imagegen-seeds": ",".join(map(str, job.seeds)), "x-imagegen-model": model.id}
        return JSONResponse(payload, headers=headers)

    async def list_models(self, request: Request) -> Response:
        cards = [
            ModelCard(id=name, created=self.started, root=None if name == mid else mid)
            for name, mid in self.names.items()
        ]
        return JSONResponse(dump(ModelList(data=cards)))

    async def get_model(self, request: Request) -> Response:
        name = request.path_params["model"]
        model = self.resolve_model(name)
        card = ModelCard(id=name, created=self.started, root=None if name == model.id else model.id)
        return JSONResponse(dump(card))

    async def get_file(self, request: Request) -> Response:
        key = request.path_params["key"]
        if not self.store.valid_key(key):
            raise APIError("not_found", "No such image.", code="image_not_found")
        reason = self.store.signer.verify(
            key, request.query_params.get("expires", ""), request.query_params.get("signature", "")
        )
        if reason:
            raise APIError(
                "permission_denied", f"This image URL is not valid ({reason}).", code="invalid_url"
            )
        data = self.store.get(key)
        if data is None:
            raise APIError("not_found", "No such image.", code="image_not_found")
        headers = {"cache-control": "private, max-age=3600", "x-content-type-options": "nosniff"}
        return Response(data, media_type=content_type_for(key), headers=headers)

    async def health(self, request: Request) -> Response:
        """Liveness: the ingress answers. Never touches the models."""
        return JSONResponse({"status": "ok"})

    async def ready(self, request: Request) -> Response:
        """Readiness: every model deployment and the encoder answer within a deadline."""
        handles = {"encoder": self.encoder, **{f"model:{k}": v for k, v in self.models.items()}}
        checks = {name: h.ready.remote() for name, h in handles.items()}
        status: dict[str, str] = {}
        for name, response in checks.items():
            try:
                await asyncio.wait_for(_resolve(response), timeout=READY_TIMEOUT_S)
                status[name] = "ready"
            except Exception:  # noqa: BLE001 - reported per deployment
                status[name] = "unavailable"
        ok = all(value == "ready" for value in status.values())
        return JSONResponse(
            {"status": "ready" if ok else "not_ready", "deployments": status},
            status_code=200 if ok else 503,
        )


async def _resolve(response: DeploymentResponse) -> Any:
    return await response
