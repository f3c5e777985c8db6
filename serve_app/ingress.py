"""The ingress: shared state and the one generate-then-encode path, plain or streamed.

This is the only caller of the model handles. Routes (``serve_app/routes/``, one
module per API surface) call :meth:`Ingress.generate_images` or, for ``stream=true``,
:meth:`Ingress.stream_images`. Both send the job and its ``EncodeSpec`` to the model
deployment, whose replica hands its pixels to the encoder deployment itself: what
comes back here is ``EncodedImage``s only (base64 bytes, URLs or store keys), never
arrays. Both check the canonical job against the model first
(``common.limits.check_job``), whatever route built it.
The Serve deployment class that adds the HTTP app is ``serve_app.app.IngressDeployment``.

An async job (``serve_app/jobs``) runs the same route code with :data:`PROGRESS` set:
then :meth:`Ingress.generate_images` takes the model's streamed path with per-step
progress events on (previews off) and reports each step to the job.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextvars import ContextVar
from typing import Any

from ray.serve.handle import DeploymentHandle, DeploymentResponse, DeploymentResponseGenerator
from starlette.requests import Request

from common import limits
from common.config import ImageServingArgs
from common.errors import APIError, from_exception, is_backpressure, model_starting
from common.job import EncodedImage, EncodeSpec, GenerationJob
from common.model_config import ModelConfig
from common.request_context import install_log_context
from serve_app.asgi.auth import ApiKeys, load_batch_keys, load_keys
from serve_app.cold_start import guard_cold_start
from serve_app.streaming.sse import StreamFormat
from storage.catalog import ImageCatalog
from storage.factory import make_store, start_expiry

logger = logging.getLogger("imagegen.ingress")

# deployment name -> its RUNNING replicas; asked only when a queue is full.
ReplicaCounter = Callable[[str], Awaitable[int]]
REPLICA_COUNT_TTL_S = 1.0
# (step, total_steps) after each denoising step; set by the job runner for its task only.
ProgressSink = Callable[[int, int], None]
PROGRESS: ContextVar[ProgressSink | None] = ContextVar("imagegen_job_progress", default=None)
# With a progress sink, also previews of the images as they stand, encoded like streamed
# previews (the job's format, fastest settings): A1111's /progress shows the first as
# current_image. At most this many per request.
PreviewSink = Callable[[list[EncodedImage]], None]
PREVIEWS: ContextVar[PreviewSink | None] = ContextVar("imagegen_job_previews", default=None)
MAX_OBSERVED_PREVIEWS = 10


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
        # Asked only whether it is ready (/health): the model replicas call it themselves.
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
        keys = self.args.ingress.api_keys
        self.api_keys = ApiKeys(load_keys(keys), load_batch_keys(keys))
        logger.info("API keys %s", "on" if self.api_keys.enabled else "off")

    def __del__(self) -> None:
        sweeper = getattr(self, "sweeper", None)
        if sweeper is not None:
            sweeper.stop()

    def resolve_model(self, name: str | None) -> ModelConfig:
        """A model id or alias -> its config; ``None`` or ``""`` -> the default model (Open
        WebUI sends an empty ``model`` for its default edit model); any other name -> 404."""
        if not name:
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
        """Generate and encode on the model deployment (its replica calls the encoder),
        within the deadline."""
        limits.check_job(model, job, spec)
        try:
            sink = PROGRESS.get()
            if sink is not None:
                return await self._generate_observed(model, job, spec, sink)
            work = self.within_deadline(self.models[model.id].generate.remote(job, spec))
            if model.deployment.scales_to_zero() and await self._is_cold(model):
                return await guard_cold_start(model, work, self._running_now)
            return await work
        except Exception as exc:
            # A full queue while the model has no running replica is a cold start
            # (503), not an overload of busy replicas (429): see errors.ERROR_TABLE.
            if is_backpressure(exc) and await self._is_cold(model):
                raise model_starting(model.id, model.cold_start_retry_after_s) from None
            raise

    async def _generate_observed(
        self, model: ModelConfig, job: GenerationJob, spec: EncodeSpec, sink: ProgressSink
    ) -> list[EncodedImage]:
        """The streamed model call with progress events on; its final images come back
        encoded. Cancelling the caller (a job's ``DELETE``) cancels the stream: its rows
        leave the batch at the next step."""
        previews = PREVIEWS.get()
        wanted = min(job.steps - 1, MAX_OBSERVED_PREVIEWS) if previews is not None else 0
        observed = dataclasses.replace(job, report_progress=True, partial_images=max(wanted, 0))
        stream = self.models[model.id].options(stream=True).generate_stream.remote(observed, spec)
        images: list[EncodedImage] | None = None
        try:
            async with asyncio.timeout(self.args.ingress.request_timeout_s):
                async for event in stream:
                    if event.kind == "progress":
                        sink(event.step, event.total_steps)
                    elif event.kind == "partial" and previews is not None:
                        previews(list(event.images))
                    elif event.kind == "final":
                        images = list(event.images)
                        break
        finally:
            if images is None:
                stream.cancel()
        if images is None:
            raise RuntimeError(f"request {job.request_id} ended without images")
        return images

    async def stream_images(
        self, model: ModelConfig, job: GenerationJob, spec: EncodeSpec, fmt: StreamFormat
    ) -> AsyncIterator[str]:
        """The SSE frames of one streamed request. The job is checked, and the model
        call admitted to a replica, before the response starts: a bad job is a plain
        4xx, and a full model queue the same 429 (or cold-start 503) with
        ``Retry-After`` as for a plain request, never a 200 with an in-band error."""
        limits.check_job(model, job, spec)
        stream = self.models[model.id].options(stream=True).generate_stream.remote(job, spec)
        try:
            async with asyncio.timeout(self.args.ingress.request_timeout_s):
                await admitted(stream)
        except BaseException as exc:
            stream.cancel()
            if is_backpressure(exc) and await self._is_cold(model):
                raise model_starting(model.id, model.cold_start_retry_after_s) from None
            raise
        return self._stream_frames(stream, job, fmt)

    async def _stream_frames(
        self,
        stream: DeploymentResponseGenerator,
        job: GenerationJob,
        fmt: StreamFormat,
    ) -> AsyncIterator[str]:
        """Previews and finals, encoded on the model's side, as SSE frames within the
        request deadline. If the client goes away, the model request is cancelled (its
        rows leave the batch)."""
        finished = False
        try:
            async with asyncio.timeout(self.args.ingress.request_timeout_s):
                async for event in stream:
                    for frame in fmt.frames(event, list(event.images)):
                        yield frame
            finished = True
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # noqa: BLE001 - reported in-band, the status line is sent
            yield fmt.error(from_exception(exc, job.request_id))
            return
        finally:
            if not finished:
                stream.cancel()
        for frame in fmt.end():
            yield frame

    async def _is_cold(self, model: ModelConfig) -> bool:
        try:
            return await self.running_replicas(model) == 0
        except Exception:  # noqa: BLE001 - the overload answer (429) still stands
            logger.warning("could not count replicas of %s", model.id, exc_info=True)
            return False

    async def _running_now(self, model: ModelConfig) -> int:
        return await self._count_replicas(model.deployment_name())

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


async def admitted(stream: DeploymentResponseGenerator) -> None:
    """Wait until Serve's router has given a streamed call a replica: this is where a
    full queue (``BackPressureError``) surfaces. Ray has no public call for it; the
    first item would also wait for the first image. Without the private hook (another
    Ray), the stream starts as before and a refusal is reported in band."""
    fetch = getattr(stream, "_fetch_future_result_async", None)
    if fetch is not None:
        await fetch()


async def serve_running_replicas(deployment: str) -> int:
    """Ask Serve's controller how many replicas of a deployment in this app run."""
    from ray import serve

    app = serve.get_replica_context().app_name
    status = await asyncio.to_thread(serve.status)
    overview = status.applications[app].deployments.get(deployment)
    # ReplicaState is a str enum, so its plain name finds the count.
    return 0 if overview is None else overview.replica_states.get("RUNNING", 0)  # type: ignore[call-overload]
