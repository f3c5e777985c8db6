"""Runs accepted jobs in the background of one ingress replica, and keeps their records.

A job is the wrapped route's own code (``/v1/images/generations`` and the rest) run on
a replayed copy of the request (:class:`StoredCall`), in a task of its own with
``serve_app.ingress.PROGRESS`` set, so the model reports every denoising step to it.
Its answer becomes the job's ``result`` (2xx) or ``error`` (the OpenAI error object).

Admission: at most ``jobs.max_queued`` unfinished jobs per replica (429 past it) and
``jobs.max_running`` sent to the models at once. A job that meets a full model queue
(429 ``overloaded``) or a cold model (503) stays ``queued`` and tries again after the
answer's ``Retry-After``, for up to ``jobs.queue_timeout_s``; it becomes ``running``
at its first denoising step.

Leases: a ticker renews the lease of every job this replica holds every
``jobs.heartbeat_s`` and writes fresh progress; it also picks up cancel requests made
on other replicas (``storage.jobs`` cancel markers). If the replica dies, the lease
runs out and readers (or the sweeper) settle the job as ``worker_lost``.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from starlette.requests import Request
from starlette.responses import Response

from common.config import ImageServingArgs
from common.errors import APIError, from_exception
from common.request_context import REQUEST_ID
from serve_app.ingress import PROGRESS
from serve_app.jobs.webhooks import WebhookSender
from storage.base import ImageStore
from storage.jobs import JobRecord, JobStore, Progress, WebhookAttempt

logger = logging.getLogger("imagegen.jobs")

Endpoint = Callable[[Request], Awaitable[Response]]
RETRYABLE_CODES = frozenset({"overloaded", "model_cold_start", "unavailable"})
MAX_REQUEUE_WAIT_S = 5.0
TICK_S = 1.0


@dataclass
class StoredCall:
    """A request to replay into a route: its scope (path set to the route) and body."""

    endpoint: Endpoint
    scope: dict[str, Any]
    body: bytes

    def request(self) -> Request:
        sent = False

        async def receive() -> dict[str, Any]:
            nonlocal sent
            if not sent:
                sent = True
                return {"type": "http.request", "body": self.body, "more_body": False}
            await asyncio.Event().wait()  # never a disconnect: the job owns the request
            raise AssertionError("unreachable")

        return Request(self.scope, receive)


@dataclass
class ActiveJob:
    record: JobRecord
    task: asyncio.Task[None] | None = None
    cancel: bool = False
    dirty: bool = False
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)


def retry_after(response: Response) -> float | None:
    """Seconds to wait before trying again, if the answer was a full or cold queue."""
    if response.status_code not in (429, 503):
        return None
    try:
        code = json.loads(bytes(response.body))["error"]["code"]
    except (AttributeError, ValueError, KeyError, TypeError):
        return None
    if code not in RETRYABLE_CODES:
        return None
    header = response.headers.get("retry-after", "1")
    return min(float(header) if header.isdigit() else 1.0, MAX_REQUEUE_WAIT_S)


class JobRunner:
    """The jobs of one ingress replica: submit, read, list, cancel; leases and sweeps."""

    def __init__(
        self, store: ImageStore, args: ImageServingArgs, webhooks: WebhookSender | None
    ) -> None:
        self.jobs = JobStore(store)
        self.args = args
        self.config = args.jobs
        self.webhooks = webhooks
        self.active: dict[str, ActiveJob] = {}
        self._slots: asyncio.Semaphore | None = None
        self._background: set[asyncio.Task[Any]] = set()
        self._ticker: asyncio.Task[None] | None = None
        self._attempts_lock = asyncio.Lock()

    # -- admission and submission ---------------------------------------------------

    def new_record(
        self,
        job_id: str,
        owner: str,
        endpoint: str,
        model: str | None,
        webhook_url: str | None,
        webhook_events: list[str],
    ) -> JobRecord:
        now = time.time()
        return JobRecord(
            id=job_id,
            owner=owner,
            endpoint=endpoint,
            status="queued",
            created_at=int(now),
            model=model,
            expires_at=int(
                now
                + self.config.queue_timeout_s
                + self.args.ingress.request_timeout_s
                + self.args.storage.url_ttl_s
            ),
            lease_expires_at=now + self.config.lease_s,
            webhook_url=webhook_url,
            webhook_events=webhook_events if webhook_url else [],
        )

    def check_capacity(self) -> None:
        if len(self.active) >= self.config.max_queued:
            raise APIError(
                "rate_limited",
                f"{len(self.active)} jobs are waiting on this server (jobs.max_queued); "
                "retry after a short wait.",
                code="too_many_jobs",
                headers={"retry-after": "5"},
            )

    async def submit(self, record: JobRecord, call: StoredCall) -> JobRecord:
        """Store the job, then run it in the background; the record is the 202 body."""
        self.check_capacity()
        self.start()
        job = ActiveJob(record)
        self.active[record.id] = job  # holds its place before the first await
        try:
            await asyncio.to_thread(self.jobs.save, record)
        except BaseException:
            self.active.pop(record.id, None)
            raise
        job.task = asyncio.create_task(self._run(job, call), name=f"job {record.id}")
        return record

    # -- reading ----------------------------------------------------------------------

    async def get(self, owner: str, job_id: str) -> JobRecord | None:
        """The freshest view: this replica's own copy while it runs the job, else the store
        (a lease found expired there is settled as ``worker_lost`` first)."""
        self.start()
        local = self.active.get(job_id)
        if local is not None and local.record.owner == owner:
            return local.record
        record = await asyncio.to_thread(self.jobs.get, owner, job_id)
        if record is None or job_id in self.active:
            return record
        return await self._settle(record)

    async def list(self, owner: str, limit: int, after: str | None) -> tuple[list[JobRecord], bool]:
        self.start()
        records, more = await asyncio.to_thread(self.jobs.list, owner, limit, after)
        fresh = []
        for record in records:
            local = self.active.get(record.id)
            fresh.append(local.record if local is not None else await self._settle(record))
        return fresh, more

    async def _settle(self, record: JobRecord) -> JobRecord:
        if not record.lease_expired(time.time()):
            return record
        settled = await asyncio.to_thread(self.jobs.settle_lost, record)
        logger.warning("job %s: its replica stopped holding it (worker_lost)", record.id)
        self._spawn(self._notify(settled, "completed"))
        return settled

    async def cancel(self, record: JobRecord) -> JobRecord:
        """Cancel an unfinished job: here at once (its rows leave at the next step), or
        through a cancel marker the replica running it picks up at its next tick."""
        if not record.active:
            return record
        local = self.active.get(record.id)
        if local is not None and local.task is not None:
            local.cancel = True
            local.task.cancel()
            with contextlib.suppress(asyncio.CancelledError, TimeoutError):
                await asyncio.wait_for(asyncio.shield(local.task), timeout=10)
            return local.record
        await asyncio.to_thread(self.jobs.request_cancel, record)
        now = time.time()
        cancelled = record.model_copy(
            update={
                "status": "cancelled",
                "finished_at": int(now),
                "expires_at": int(now + self.args.storage.url_ttl_s),
                "lease_expires_at": None,
            }
        )
        await asyncio.to_thread(self.jobs.save, cancelled)
        return cancelled

    # -- running ----------------------------------------------------------------------

    async def _run(self, job: ActiveJob, call: StoredCall) -> None:
        PROGRESS.set(lambda step, total: self._on_progress(job, step, total))
        REQUEST_ID.set(str(call.scope.get("imagegen.request_id", job.record.id)))
        deadline = time.monotonic() + self.config.queue_timeout_s
        if self._slots is None:
            self._slots = asyncio.Semaphore(self.config.max_running)
        update: dict[str, Any]
        try:
            while True:
                async with self._slots:
                    response = await call.endpoint(call.request())
                wait = retry_after(response)
                if wait is None or time.monotonic() + wait > deadline:
                    break
                await asyncio.sleep(wait)
            update = outcome(response)
        except asyncio.CancelledError:
            if not job.cancel:
                raise  # the replica is stopping: the lease runs out, readers see worker_lost
            update = {"status": "cancelled"}
        except Exception as exc:  # noqa: BLE001 - recorded on the job
            error = from_exception(exc, job.record.id).body()["error"]
            update = {"status": "failed", "error": error}
        try:
            await self._finish(job, update)
        finally:
            self.active.pop(job.record.id, None)  # already gone once the save succeeded
        self._spawn(self._notify(job.record, "completed"))

    def _on_progress(self, job: ActiveJob, step: int, total: int) -> None:
        first = job.record.status == "queued"
        update: dict[str, Any] = {"progress": Progress(step=step, total_steps=total)}
        if first:
            update.update(status="running", started_at=int(time.time()))
        job.record = job.record.model_copy(update=update)
        job.dirty = True
        if first:
            self._spawn(self._notify(job.record, "started"))

    async def _finish(self, job: ActiveJob, update: dict[str, Any]) -> None:
        now = time.time()
        async with job.lock:
            if update["status"] != "cancelled" and await asyncio.to_thread(
                self.jobs.cancel_requested, job.record
            ):
                update = {"status": "cancelled"}
            update.update(
                finished_at=int(now),
                expires_at=int(now + self.args.storage.url_ttl_s),
                lease_expires_at=None,
            )
            job.record = job.record.model_copy(update=update)
            await asyncio.to_thread(self.jobs.save, job.record)
            # Under the lock: a webhook attempt recorded from now on goes to the store.
            self.active.pop(job.record.id, None)

    # -- leases, sweeps, webhooks -------------------------------------------------------

    def start(self) -> None:
        """Start the ticker (leases, progress, remote cancels) and the sweeper once."""
        if self._ticker is None:
            self._ticker = asyncio.create_task(self._tick_forever(), name="jobs ticker")
            self._spawn(self._sweep_forever())

    async def _tick_forever(self) -> None:
        last_renewal = time.monotonic()
        while True:
            await asyncio.sleep(min(TICK_S, self.config.heartbeat_s))
            renew = time.monotonic() - last_renewal >= self.config.heartbeat_s
            if renew:
                last_renewal = time.monotonic()
            for job in list(self.active.values()):
                if renew or job.dirty:
                    try:
                        await self._heartbeat(job)
                    except Exception:  # noqa: BLE001 - the next tick tries again
                        logger.warning("job %s: heartbeat failed", job.record.id, exc_info=True)

    async def _heartbeat(self, job: ActiveJob) -> None:
        async with job.lock:
            if job.record.id not in self.active:
                return
            if await asyncio.to_thread(self.jobs.cancel_requested, job.record):
                job.cancel = True
                if job.task is not None:
                    job.task.cancel()
                return
            job.dirty = False
            lease = time.time() + self.config.lease_s
            job.record = job.record.model_copy(update={"lease_expires_at": lease})
            await asyncio.to_thread(self.jobs.save, job.record)

    async def _sweep_forever(self) -> None:
        while True:
            try:
                deleted, lost = await asyncio.to_thread(self.jobs.sweep)
                lost = [r for r in lost if r.id not in self.active]
                for record in lost:
                    self._spawn(self._notify(record, "completed"))
                if deleted or lost:
                    logger.info("job sweep: %d expired deleted, %d lost", deleted, len(lost))
            except Exception:  # noqa: BLE001 - the next sweep tries again
                logger.warning("job sweep failed", exc_info=True)
            await asyncio.sleep(self.config.sweep_interval_s)

    async def _notify(self, record: JobRecord, event: str) -> None:
        if self.webhooks is None or record.webhook_url is None:
            return
        if event not in record.webhook_events:
            return

        async def on_attempt(attempt: WebhookAttempt) -> None:
            # While the job runs here, the attempt goes to its live copy (saved at the
            # next tick); once it has finished, webhook attempts are the only writers,
            # serialised by one lock, so a read-modify-write of the record keeps them all.
            async with self._attempts_lock:
                local = self.active.get(record.id)
                if local is not None:
                    async with local.lock:
                        if record.id in self.active:
                            local.record = local.record.model_copy(
                                update={
                                    "webhook_attempts": [*local.record.webhook_attempts, attempt]
                                }
                            )
                            local.dirty = True
                            return
                current = await asyncio.to_thread(self.jobs.get, record.owner, record.id)
                base = current or record
                updated = base.model_copy(
                    update={"webhook_attempts": [*base.webhook_attempts, attempt]}
                )
                await asyncio.to_thread(self.jobs.save, updated)

        try:
            await self.webhooks.deliver(
                record.webhook_url, event, record.public(), f"msg_{record.id}_{event}", on_attempt
            )
        except Exception:  # noqa: BLE001 - recorded in the log; the job itself is done
            logger.warning("job %s: webhook %s failed", record.id, event, exc_info=True)

    def _spawn(self, coro: Awaitable[Any]) -> None:
        task = asyncio.ensure_future(coro)
        self._background.add(task)
        task.add_done_callback(self._background.discard)


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
