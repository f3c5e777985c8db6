"""Runs accepted jobs in the background of an ingress replica, and keeps their records.

A job is the wrapped route's own code (``/v1/images/generations`` and the rest) run on
its stored request (``serve_app.jobs.replay``), in a task of its own with
``serve_app.ingress.PROGRESS`` set, so the model reports every denoising step to it.
Its answer becomes the job's ``result`` (2xx) or ``error`` (the OpenAI error object).

Admission: at most ``jobs.max_queued`` unfinished jobs in the whole app (the shared
ledger of ``serve_app.jobs.admission``; 429 past it) and ``jobs.max_running`` sent to
the models at once by one replica. A job that meets a full model queue (429
``overloaded``) or a cold model (503) stays ``queued`` and tries again after the
answer's ``Retry-After``, for up to ``jobs.queue_timeout_s``; it becomes ``running``
at its first denoising step. A model replica that died under it (``replica_failed``)
starts the next attempt here, up to ``jobs.max_attempts``.

Leases (``serve_app.jobs.leases``): this replica renews the lease of every job it
holds every ``jobs.heartbeat_s``. Every write is conditional on the version it last
wrote; a write that finds the job taken over, cancelled or finished elsewhere
(``LostLease``) stops the job here at once, and nothing more of it is written.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from starlette.responses import Response

from common.errors import APIError, from_exception
from common.request_context import REQUEST_ID
from serve_app.ingress import PROGRESS
from serve_app.jobs.replay import StoredCall
from storage.jobs import JobRecord, JobStore, LostLease, Progress, VersionedJob

logger = logging.getLogger("imagegen.jobs")

RETRYABLE_CODES = frozenset({"overloaded", "model_cold_start", "unavailable"})
# Run again (next attempt): the model replica died under the job, or the attempt ran
# past ingress.request_timeout_s, which is how Ray 2.60 ends a call whose replica went
# with its node (measured in tests/integration/test_multinode.py).
RERUN_CODES = frozenset({"replica_failed", "timeout"})
MAX_REQUEUE_WAIT_S = 5.0
# What the replica holding a job writes; everything else (webhook attempts) it keeps
# as stored, so other writers' changes survive its writes.
OWN_FIELDS = (
    "status",
    "progress",
    "result",
    "error",
    "started_at",
    "finished_at",
    "expires_at",
    "lease_expires_at",
    "attempt",
    "holder",
)


@dataclass
class ActiveJob:
    """A job this replica holds: the record as last written, and its version tag."""

    record: JobRecord
    etag: str
    task: asyncio.Task[None] | None = None
    cancel: bool = False
    lost: bool = False
    dirty: bool = False
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)


def retry_after(response: Response) -> float | None:
    """Seconds to wait before trying again, if the answer was a full or cold queue."""
    if response.status_code not in (429, 503):
        return None
    if error_code(response) not in RETRYABLE_CODES:
        return None
    return retry_wait(response)


def retry_wait(response: Response) -> float:
    header = response.headers.get("retry-after", "1")
    return min(float(header) if header.isdigit() else 1.0, MAX_REQUEUE_WAIT_S)


def error_code(response: Response) -> str | None:
    try:
        return str(json.loads(bytes(response.body))["error"]["code"])
    except (AttributeError, ValueError, KeyError, TypeError):
        return None


class JobExecutor:
    """Runs and writes the jobs one replica holds; ``holder`` is this replica's token."""

    def __init__(
        self,
        jobs: JobStore,
        holder: str,
        max_running: int,
        queue_timeout_s: float,
        max_attempts: int,
        url_ttl_s: int,
        on_started: Callable[[JobRecord], None],
    ) -> None:
        self.jobs = jobs
        self.on_started = on_started
        self.holder = holder
        self.max_running = max_running
        self.queue_timeout_s = queue_timeout_s
        self.max_attempts = max_attempts
        self.url_ttl_s = url_ttl_s
        self.active: dict[str, ActiveJob] = {}
        self._slots: asyncio.Semaphore | None = None

    # -- writing ------------------------------------------------------------------------

    async def write(self, job: ActiveJob, **update: Any) -> bool:
        """Apply ``update`` to the job and store it if this replica still holds it.

        -> False once the job moved on elsewhere: it is marked lost and its task is
        cancelled, and nothing of it is written again."""
        async with job.lock:
            if job.lost:
                return False
            held = job.record.attempt
            local = job.record.model_copy(update=update)

            def mine(fresh: JobRecord) -> JobRecord:
                if fresh.holder != self.holder or fresh.attempt != held or not fresh.active:
                    raise LostLease(fresh.status)
                return fresh.model_copy(update={f: getattr(local, f) for f in OWN_FIELDS})

            known = VersionedJob(job.record, job.etag)
            try:
                written = await asyncio.to_thread(
                    self.jobs.update, local.owner, local.id, mine, known
                )
            except LostLease as lost:
                written = None
                logger.warning("job %s: lost its lease here (now %s)", local.id, lost)
            if written is None:
                self._lose(job)
                return False
            # Progress may have moved on while this write was in flight: keep it, and
            # stay dirty until it is written too.
            job.record = job.record.model_copy(
                update={**update, "webhook_attempts": written.record.webhook_attempts}
            )
            job.etag = written.etag
            job.dirty = any(
                getattr(job.record, f) != getattr(written.record, f) for f in OWN_FIELDS
            )
            return True

    def _lose(self, job: ActiveJob) -> None:
        job.lost = True
        current = asyncio.current_task()
        if job.task is not None and job.task is not current:
            job.task.cancel()

    # -- running ------------------------------------------------------------------------

    async def run(self, job: ActiveJob, call: StoredCall) -> bool:
        """Run the job to its end here. -> True if this replica wrote its final state."""
        PROGRESS.set(lambda step, total: self._on_progress(job, step, total))
        REQUEST_ID.set(str(call.scope.get("imagegen.request_id", job.record.id)))
        deadline = time.monotonic() + self.queue_timeout_s
        if self._slots is None:
            self._slots = asyncio.Semaphore(self.max_running)
        update: dict[str, Any]
        try:
            while True:
                async with self._slots:
                    response = await call.endpoint(call.request())
                wait = retry_after(response)
                if wait is not None and time.monotonic() + wait <= deadline:
                    await asyncio.sleep(wait)
                    continue
                update = outcome(response)
                if error_code(response) in RERUN_CODES and job.record.attempt < self.max_attempts:
                    # Serve is replacing the replica: wait as a client would, then rerun.
                    await asyncio.sleep(retry_wait(response))
                    if await self._next_attempt(job):
                        continue
                break
        except asyncio.CancelledError:
            if job.lost:
                return False  # taken over, or cancelled elsewhere: write nothing
            if not job.cancel:
                raise  # the replica is stopping: the lease runs out, another takes over
            update = {"status": "cancelled"}
        except Exception as exc:  # noqa: BLE001 - recorded on the job
            error = from_exception(exc, job.record.id).body()["error"]
            update = {"status": "failed", "error": error}
        return await self._finish(job, update)

    async def _next_attempt(self, job: ActiveJob) -> bool:
        attempt = job.record.attempt + 1
        logger.warning("job %s: a model replica failed; attempt %d", job.record.id, attempt)
        return await self.write(job, attempt=attempt, status="queued", progress=None)

    def _on_progress(self, job: ActiveJob, step: int, total: int) -> None:
        """Progress goes to the store at the next tick; the first step sends ``started``."""
        first = job.record.status == "queued"
        update: dict[str, Any] = {"progress": Progress(step=step, total_steps=total)}
        if first:
            update.update(status="running", started_at=int(time.time()))
        job.record = job.record.model_copy(update=update)
        job.dirty = True
        if first:
            self.on_started(job.record)

    async def _finish(self, job: ActiveJob, update: dict[str, Any]) -> bool:
        if update["status"] != "cancelled" and await asyncio.to_thread(
            self.jobs.cancel_requested, job.record
        ):
            update = {"status": "cancelled"}
        now = time.time()
        update.update(
            finished_at=int(now),
            expires_at=int(now + self.url_ttl_s),
            lease_expires_at=None,
            holder=None,
        )
        return await self.write(job, **update)

    async def cancel_here(self, job: ActiveJob) -> JobRecord:
        """Cancel a job running on this replica: its handle call at once."""
        job.cancel = True
        if job.task is not None:
            job.task.cancel()
            with contextlib.suppress(asyncio.CancelledError, TimeoutError):
                await asyncio.wait_for(asyncio.shield(job.task), timeout=10)
        return job.record


def outcome(response: Response) -> dict[str, Any]:
    """A route's answer as the job's final fields."""
    try:
        body = json.loads(bytes(response.body))
    except (AttributeError, ValueError):
        return {
            "status": "failed",
            "error": APIError("internal", "The route gave no JSON answer.").body()["error"],
        }
    if 200 <= response.status_code < 300:
        return {"status": "succeeded", "result": body}
    error = body.get("error") if isinstance(body, dict) else None
    return {"status": "failed", "error": error if isinstance(error, dict) else {"message": body}}
