"""The model deployment: one per configured model, batching requests by image count.

How a batch forms. Ray's ``@serve.batch`` loop pulls the next batch as soon as one
item is queued, even while the previous batch still runs, so with a short wait it
would cut many batches of one. An admission gate in front of it fixes that: while
a batch runs, new requests wait at the gate; when it finishes they all enter the
queue together and become the next batch. An idle replica therefore starts a lone
request at once, and a busy one batches everything that queued meanwhile.

Everything that touches torch (loading, warm-up, every pipeline call) runs on one
dedicated worker thread: diffusers pipelines are not thread-safe, OpenMP thread
pools are per calling thread (a second pool spinning in another thread made CPU
inference ~3x slower here), and the replica's event loop stays free.
"""

from __future__ import annotations

import asyncio
import logging
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict
from typing import Any

import numpy as np
from ray import serve

from deployments.batching import count_images, group_jobs, scatter
from deployments.engine import Engine, EngineFactory, diffusers_engine_factory
from serve_app.config import BatchingConfig, ModelConfig
from serve_app.job import BatchStats, GenerationJob

logger = logging.getLogger("imagegen.model")

WARMUP_STEPS = 2


class ModelServer:
    """Serves one model. Construct with an ``engine_factory`` to inject a fake engine."""

    def __init__(
        self, config: ModelConfig | dict[str, Any], engine_factory: EngineFactory | None = None
    ) -> None:
        self.config = ModelConfig.model_validate(config)
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="pipeline")
        self._stats = BatchStats()
        self._gate_closed = False
        self._gate_open = asyncio.Event()
        self._running = False
        # Built per instance (not a class-level decorator) so each server owns its
        # batch queue, bound to the event loop it runs on.
        self._generate_batch = serve.batch(
            max_batch_size=self.config.batching.max_batch_size,
            batch_wait_timeout_s=self.config.batching.batch_wait_timeout_s,
            batch_size_fn=count_images,
        )(self._run_batch)
        started = time.perf_counter()
        factory = engine_factory or diffusers_engine_factory
        self._engine: Engine = self._executor.submit(factory, self.config).result()
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
        self._generate_batch.set_max_batch_size(batching.max_batch_size)
        self._generate_batch.set_batch_wait_timeout_s(batching.batch_wait_timeout_s)

    async def generate(self, job: GenerationJob) -> np.ndarray:
        """Generate ``job.n`` images; returns a ``(n, H, W, 3)`` uint8 array."""
        if self._gate_closed:
            await self._gate_open.wait()
        # The first request through closes the gate; requests released together
        # by the same opening all pass before the batch loop runs again.
        self._gate_closed = True
        try:
            return await self._generate_batch(job)
        except asyncio.CancelledError:
            # A cancelled request may leave a batch that never runs, and so never
            # reopens the gate. Reopen it unless a batch is running.
            if not self._running:
                self._open_gate()
            raise

    def _open_gate(self) -> None:
        self._gate_closed = False
        opened, self._gate_open = self._gate_open, asyncio.Event()
        opened.set()

    async def _run_batch(self, jobs: list[GenerationJob]) -> list[np.ndarray]:
        self._running = True
        try:
            groups = group_jobs(jobs)
            loop = asyncio.get_running_loop()
            outputs = await loop.run_in_executor(self._executor, self._run_groups, groups)
            self._stats.record(requests=len(jobs), images=count_images(jobs), calls=len(groups))
            return scatter(jobs, groups, outputs)
        finally:
            self._running = False
            self._open_gate()

    def _run_groups(self, groups: list[Any]) -> list[np.ndarray]:
        return [self._engine.generate(group) for group in groups]

    def stats(self) -> dict[str, Any]:
        """Batch counters of this replica (batch sizes count images)."""
        return asdict(self._stats)

    def ready(self) -> bool:
        return True
