"""The model deployment: one per configured model, batching requests by image count.

Two batching modes (``batching.mode``). In ``step`` mode (the default) the replica
owns the denoising loop: requests join and leave the running batch between steps
(:mod:`deployments.model.scheduler.step_loop`, docs/scheduler.md). In ``request`` mode, the
benchmark baseline, one pipeline call serves a whole batch of requests, as follows.

How a request-mode batch forms. Ray's ``@serve.batch`` loop pulls the next batch as soon as one
item is queued, even while the previous batch still runs, so with a short wait it
would cut many batches of one. An admission gate in front of it fixes that: while
a batch runs, new requests wait at the gate; when it finishes they all enter the
queue together and become the next batch. An idle replica therefore starts a lone
request at once, and a busy one batches everything that queued meanwhile.

One batch serves streamed and plain requests alike. The batched function is a
generator: it relays per-request events (previews at evenly spaced steps, then the
finished images) as the pipeline thread produces them. A request whose caller goes
away is marked cancelled; its images leave the running pipeline call at the next step.

Everything that touches torch (loading, warm-up, every pipeline call) runs on one
dedicated worker thread: diffusers pipelines are not thread-safe, OpenMP thread
pools are per calling thread (a second pool spinning in another thread made CPU
inference ~3x slower here), and the replica's event loop stays free.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict
from typing import Any

import numpy as np
from ray import serve

from common.job import BatchStats, EncodedImage, EncodeSpec, GenerationJob, ImageEvent
from common.model_config import BatchingConfig, ModelConfig
from common.request_context import install_log_context
from deployments.metrics import ModelMetrics
from deployments.model.encoding import EncoderLink
from deployments.model.families.base import Family
from deployments.model.families.registry import FamilyFactory, load_family
from deployments.model.hires import two_passes
from deployments.model.interrupts import should_finish
from deployments.model.lora.bank import LoraBank, bank_for
from deployments.model.lora.pinning import pin_adapters
from deployments.model.request_mode.batching import count_images, group_jobs
from deployments.model.request_mode.engine import Engine, EngineFactory, diffusers_engine_factory
from deployments.model.request_mode.runner import run_groups
from deployments.model.scheduler.policy import AdmissionPolicy
from deployments.model.scheduler.runner import StepRunner
from deployments.model.scheduler.step_loop import StepLoop
from deployments.model.scheduler.submission import Submission

logger = logging.getLogger("imagegen.model")

WARMUP_STEPS = 2


class ModelServer:
    """Serves one model. Inject a fake ``family_factory`` (step mode) or
    ``engine_factory`` (request mode) in tests.

    ``encoder`` is the encoder deployment's handle: the replica sends its uint8 rows
    there itself and answers its callers with the encoded images only, so pixels go
    model -> encoder and never through the ingress."""

    def __init__(
        self,
        config: ModelConfig | dict[str, Any],
        engine_factory: EngineFactory | None = None,
        family_factory: FamilyFactory | None = None,
        encoder: Any | None = None,
    ) -> None:
        install_log_context()
        self.config = ModelConfig.model_validate(config)
        self._link = EncoderLink(encoder)
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="pipeline")
        # LoRA adapters load here, so the pipeline keeps running the rows that do not
        # need them; a request is admitted once its adapters are on the device.
        self._lora_executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="lora-load")
        self._stats = BatchStats()
        self._metrics = ModelMetrics(self.config.id)
        self._gate_closed = False
        self._gate_open = asyncio.Event()
        self._waiting = 0
        # Built per instance (not a class-level decorator) so each server owns its
        # batch queue, bound to the event loop it runs on.
        self._generate_batch = serve.batch(
            max_batch_size=self.config.batching.max_batch_size,
            batch_wait_timeout_s=self.config.batching.batch_wait_timeout_s,
            batch_size_fn=count_images,
        )(self._run_batch)
        started = time.perf_counter()
        self.mode = self.config.batching.mode
        self._steps: StepLoop | None = None
        self._engine: Engine | None = None
        self._family: Family | None = None
        self._loras: LoraBank | None = None
        if self.mode == "step":
            family = self._executor.submit(family_factory or load_family, self.config).result()
            self._family = family
            self._loras = bank_for(
                self.config, family.denoiser, family.parse_lora, family.demo_loras
            )
            runner = StepRunner(family, self._loras.rows if self._loras is not None else None)
            self._steps = StepLoop(
                runner,
                self._executor,
                AdmissionPolicy.from_config(self.config),
                self._stats,
                self._metrics,
            )
        else:
            factory = engine_factory or diffusers_engine_factory
            self._engine = self._executor.submit(factory, self.config).result()
            self._loras = self._engine.loras
        if self._loras is not None:
            self._loras.on_load = lambda adapter: self._metrics.lora_load_ms.observe(
                adapter.load_ms
            )
        if self.config.warmup:
            self._executor.submit(self._warmup).result()
        logger.info("model %s ready in %.2fs", self.config.id, time.perf_counter() - started)

    def _warmup(self) -> None:
        """One short call per distinct generation size, so no user pays first-call costs."""
        shapes = sorted({self.config.generation_size(size) for size in self.config.buckets})
        for width, height in shapes:
            job = GenerationJob(
                request_id="warmup",
                prompt="warmup",
                negative_prompt=None,
                seeds=(0,),
                gen_width=width,
                gen_height=height,
                steps=min(WARMUP_STEPS, self.config.default_steps),
                guidance=self.config.default_guidance,
            )
            if self._steps is not None:
                self._steps.run_alone(job)
                continue
            assert self._engine is not None
            for group in group_jobs([job]):
                self._engine.generate(group)

    def reconfigure(self, user_config: dict[str, Any]) -> None:
        """Live batching changes from ``user_config`` (``BatchingConfig`` fields)."""
        batching = BatchingConfig.model_validate(user_config)
        if batching.max_batch_size < self.config.max_images_per_request:
            raise ValueError(
                f"max_batch_size {batching.max_batch_size} is below "
                f"max_images_per_request {self.config.max_images_per_request}"
            )
        if batching.mode != self.mode:
            raise ValueError(
                f"batching.mode is fixed at replica start ({self.mode!r}); redeploy to change it"
            )
        if self._steps is not None:
            self._steps.policy.configure(self.config.model_copy(update={"batching": batching}))
        self._generate_batch.set_max_batch_size(batching.max_batch_size)
        self._generate_batch.set_batch_wait_timeout_s(batching.batch_wait_timeout_s)

    # -- public methods (called through handles) ---------------------------------

    async def generate(self, job: GenerationJob, spec: EncodeSpec) -> list[EncodedImage]:
        """Generate ``job.n`` images and encode them on the encoder deployment as
        ``spec`` says: only their bytes, URLs or store keys come back."""
        pixels = await self.generate_pixels(job)
        return self._link.answered(await self._link.encode(pixels, spec))

    async def generate_stream(
        self, job: GenerationJob, spec: EncodeSpec
    ) -> AsyncIterator[ImageEvent]:
        """Stream ``job.partial_images`` previews, then the finished images, each
        encoded on the encoder deployment (previews with its fastest settings), and
        ``progress`` events when ``job.report_progress`` is set. The events carry
        ``EncodedImage``s, never arrays or object references (references nested in a
        streamed item can lose their reference count in Ray 2.60, ray-project/ray#58080).
        """
        async for event in self._link.events(self._submit(Submission(job, stream=True)), spec):
            yield event

    async def generate_pixels(self, job: GenerationJob) -> np.ndarray:
        """In process (tests, benchmarks): the ``(n, H, W, 3)`` uint8 images themselves.
        Handle callers use :meth:`generate`, which encodes them first."""
        async with contextlib.aclosing(self._submit(Submission(job, stream=False))) as events:
            async for event in events:
                if event.kind == "final":
                    return event.pixels
        raise RuntimeError(f"request {job.request_id} ended without images")

    def stats(self) -> dict[str, Any]:
        """Batch counters of this replica (batch sizes count images), and how many
        requests wait right now (request mode: at the admission gate for the running
        batch; step mode: for admission at the next step boundary), and the LoRA
        adapters loaded on this replica, and the bytes that crossed its handles
        (``pixel_bytes_to_encoder``, ``bytes_to_callers``).

        In step mode a "batch" is one admission round (the requests admitted at one
        step boundary) and ``pipeline_calls`` counts UNet calls.
        """
        loaded = self._loras.loaded() if self._loras is not None else {}
        loras = {
            "loras_loaded": {
                name: {"rank": a.rank, "load_ms": a.load_ms, "bytes": a.nbytes}
                for name, a in loaded.items()
            }
        }
        if self._steps is not None:
            return {**self._steps.snapshot(), "mode": self.mode, **loras, **self._link.counters}
        return {
            **asdict(self._stats),
            "mode": self.mode,
            "waiting_requests": self._waiting,
            **loras,
            **self._link.counters,
        }

    def ready(self) -> bool:
        return True

    # -- batching -------------------------------------------------------------

    async def _submit(self, sub: Submission) -> AsyncIterator[ImageEvent]:
        if self._family is not None:
            self._family.check(sub.job)  # what this architecture cannot do is a 400
        pinned = await pin_adapters(self._loras, self.config, sub.job, self._lora_executor)
        try:
            passes = (
                self._one_pass(sub) if sub.job.hires is None else two_passes(sub, self._one_pass)
            )
            async for event in passes:
                yield event
        finally:
            if pinned and self._loras is not None:
                self._loras.unpin(pinned)

    def _one_pass(self, sub: Submission) -> AsyncIterator[ImageEvent]:
        if self._steps is not None:
            return self._submit_step(self._steps, sub)
        return self._admitted(sub)

    async def _admitted(self, sub: Submission) -> AsyncIterator[ImageEvent]:
        if self._gate_closed:
            self._waiting += 1
            try:
                await self._gate_open.wait()
            finally:
                self._waiting -= 1
        # The first request through closes the gate; requests released together
        # by the same opening all enter the batch queue before the batch loop
        # runs again (their pump tasks run in order, ahead of its wake-up).
        self._gate_closed = True
        inbox: asyncio.Queue[ImageEvent | BaseException | None] = asyncio.Queue()
        pump = asyncio.ensure_future(self._pump(sub, inbox))
        finished = False
        try:
            while (item := await inbox.get()) is not None:
                if isinstance(item, BaseException):
                    raise item
                if item.kind == "error":
                    finished = True  # failed, not abandoned: nothing to cancel
                    raise item.error or RuntimeError("generation failed")
                # Set before yielding: the consumer may stop iterating at the final.
                finished = item.kind == "final"
                yield item
                if finished:
                    return
            raise RuntimeError(f"request {sub.job.request_id} ended without images")
        finally:
            if not finished and not pump.done():
                self._cancel(sub)

    async def _submit_step(self, steps: StepLoop, sub: Submission) -> AsyncIterator[ImageEvent]:
        """Step mode: hand the request to the step loop and relay its events."""
        loop = asyncio.get_running_loop()
        inbox: asyncio.Queue[ImageEvent] = asyncio.Queue()
        sub.sink = lambda event: loop.call_soon_threadsafe(inbox.put_nowait, event)
        steps.submit(sub)
        finished = False
        try:
            while True:
                item = await inbox.get()
                if item.kind == "error":
                    finished = True
                    raise item.error or RuntimeError("generation failed")
                if item.kind == "progress" and sub.job.control and not sub.finish_now:
                    sub.finish_now = await should_finish(sub.job)  # A1111 interrupt / skip
                finished = item.kind == "final"
                yield item
                if finished:
                    return
        finally:
            if not finished:
                self._cancel(sub)  # its rows leave at the next step boundary

    async def _pump(
        self, sub: Submission, inbox: asyncio.Queue[ImageEvent | BaseException | None]
    ) -> None:
        """Read this request's stream from ``@serve.batch`` to its end.

        It runs apart from the caller so a caller that leaves early (a finished
        non-streamed request, a disconnect) never abandons the batch's futures.
        """
        try:
            async for event in self._generate_batch(sub):
                if event is not None:
                    inbox.put_nowait(event)
        except Exception as exc:  # noqa: BLE001 - handed to the caller
            inbox.put_nowait(exc)
        else:
            inbox.put_nowait(None)

    def _cancel(self, sub: Submission) -> None:
        """The caller went away (disconnect, deadline): its rows leave at the next step."""
        if not sub.cancelled:
            sub.cancelled = True
            self._stats.cancelled_requests += 1

    def _open_gate(self) -> None:
        self._gate_closed = False
        opened, self._gate_open = self._gate_open, asyncio.Event()
        opened.set()

    async def _run_batch(self, subs: list[Submission]) -> AsyncIterator[list[Any]]:
        """The ``@serve.batch`` generator: one list per yield, an item per request."""
        assert self._engine is not None
        try:
            groups = group_jobs([sub.job for sub in subs])
            streaming = sum(sub.stream for sub in subs)
            self._stats.record(len(subs), count_images(subs), len(groups), streaming)
            self._metrics.batch_images.observe(count_images(subs))
            now = time.perf_counter()
            for sub in subs:
                self._metrics.queue_wait_ms.observe((now - sub.arrived) * 1000)
            loop = asyncio.get_running_loop()
            events: asyncio.Queue[tuple[int, ImageEvent]] = asyncio.Queue()

            def emit(index: int, event: ImageEvent) -> None:
                loop.call_soon_threadsafe(events.put_nowait, (index, event))

            work = loop.run_in_executor(
                self._executor,
                run_groups,
                self._engine,
                subs,
                groups,
                emit,
                self._stats,
                self._metrics,
            )
            done: set[int] = set()
            while True:
                getter = asyncio.ensure_future(events.get())
                await asyncio.wait({getter, work}, return_when=asyncio.FIRST_COMPLETED)
                if not getter.done():
                    getter.cancel()
                    if events.empty():
                        break
                    continue
                yield _row(len(subs), *getter.result(), done)
            work.result()  # an engine error fails every request still waiting
        finally:
            self._open_gate()


def _row(size: int, index: int, event: ImageEvent, done: set[int]) -> list[Any]:
    """One yield of the batch generator: the event for one request, nothing for others.

    Requests that already got their final images get ``StopIteration``, which ends
    their stream inside ``@serve.batch``.
    """
    row: list[Any] = [StopIteration if i in done else None for i in range(size)]
    row[index] = event
    if event.kind == "final":
        done.add(index)
    return row
