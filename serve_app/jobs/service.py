"""The jobs of one ingress replica: submit, read, list, cancel; leases, takeovers, sweeps.

A job's request is stored before its record (``storage.job_requests``), so any
replica can run it again. This replica renews the lease of every job it holds every
``jobs.heartbeat_s`` (one tick also writes fresh progress). A reader that finds a
lease older than ``jobs.lease_s`` (a ``GET``, a list, or the sweeper every
``jobs.sweep_interval_s``) takes the job over with a conditional write
(``JobStore.take_over``): exactly one replica wins, bumps ``attempt`` and runs the
job again from its stored request. A cancel recorded before is honoured instead,
and after ``jobs.max_attempts`` attempts the job is ``failed`` (``worker_lost``).
"""

from __future__ import annotations

import asyncio
import logging
import os
import secrets
import socket
import time
from collections.abc import Awaitable
from typing import Any

from common.config import ImageServingArgs
from common.errors import APIError
from serve_app.jobs.admission import Admission, admission_for_replica
from serve_app.jobs.notify import Notifier
from serve_app.jobs.replay import Endpoint, stored_call
from serve_app.jobs.runner import ActiveJob, JobExecutor
from serve_app.jobs.webhooks import WebhookSender
from storage.base import ImageStore
from storage.job_requests import FormPart, StoredRequest, UploadedFile
from storage.jobs import JobRecord, JobStore, VersionedJob

logger = logging.getLogger("imagegen.jobs")

TICK_S = 1.0


def current_app() -> str | None:
    """This replica's Serve application (None outside Serve: unit tests)."""
    try:
        from ray import serve

        return serve.get_replica_context().app_name
    except Exception:  # noqa: BLE001 - not inside a Serve replica
        return None


def holder_token() -> str:
    """Who holds a job: this process, unguessable across restarts."""
    return f"{socket.gethostname()[:32]}-{os.getpid()}-{secrets.token_hex(4)}"


class JobRunner:
    """Everything the job routes ask of one replica."""

    def __init__(
        self,
        store: ImageStore,
        args: ImageServingArgs,
        webhooks: WebhookSender | None,
        endpoints: dict[str, Endpoint],
        admission: Admission | None = None,
    ) -> None:
        self.jobs = JobStore(store)
        self.app = current_app()
        self.args = args
        self.config = args.jobs
        self.endpoints = endpoints
        self.notifier = Notifier(self.jobs, webhooks)
        self.admission = admission or admission_for_replica()
        self.executor = JobExecutor(
            self.jobs,
            holder_token(),
            self.config.max_running,
            self.config.queue_timeout_s,
            self.config.max_attempts,
            args.storage.url_ttl_s,
            lambda record: self._spawn(self.notifier.notify(record, "started")),
        )
        self.active = self.executor.active
        self._background: set[asyncio.Task[Any]] = set()
        self._ticker: asyncio.Task[None] | None = None

    # -- submission ---------------------------------------------------------------------

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
                + self.config.queue_timeout_s * self.config.max_attempts
                + self.args.ingress.request_timeout_s
                + self.args.storage.url_ttl_s
            ),
            lease_expires_at=now + self.config.lease_s,
            holder=self.executor.holder,
            app=self.app,
            webhook_url=webhook_url,
            webhook_events=webhook_events if webhook_url else [],
        )

    async def submit(
        self,
        record: JobRecord,
        request: StoredRequest,
        parts: list[FormPart | UploadedFile] | None,
    ) -> JobRecord:
        """Admit, store the request and then the record, and run the job here."""
        self.start()
        count = await self.admission.admit(record.id, self.config.max_queued, self.config.lease_s)
        if count is not None:
            raise APIError(
                "rate_limited",
                f"{count} jobs are unfinished on this server (jobs.max_queued is "
                f"{self.config.max_queued}); retry after a short wait.",
                code="too_many_jobs",
                headers={"retry-after": "5"},
            )
        try:
            stored = await asyncio.to_thread(
                self.jobs.requests.save, record.owner, record.id, request, parts
            )
            created = await asyncio.to_thread(self.jobs.create, record)
        except BaseException:
            await self.admission.release(record.id)
            raise
        uploads = [p.data for p in parts or () if isinstance(p, UploadedFile)]
        keys = [p.file_key for p in stored.form or () if p.file_key is not None]
        self._start_job(created, stored, dict(zip(keys, uploads, strict=True)))
        return created.record

    def _start_job(
        self, held: VersionedJob, stored: StoredRequest, files: dict[str, bytes]
    ) -> None:
        job = ActiveJob(held.record, held.etag)
        self.active[held.record.id] = job
        call = stored_call(self.endpoints[stored.endpoint], stored, files)
        job.task = asyncio.create_task(self._run(job, call), name=f"job {held.record.id}")

    async def _run(self, job: ActiveJob, call: Any) -> None:
        try:
            finished = await self.executor.run(job, call)
        finally:
            self.active.pop(job.record.id, None)
            await self.admission.release(job.record.id)
        if finished:
            self._spawn(self.notifier.notify(job.record, "completed"))

    # -- reading and takeover -------------------------------------------------------------

    async def get(self, owner: str, job_id: str) -> JobRecord | None:
        """This replica's live copy while it runs the job, else the store's (a job
        found with an expired lease is taken over first)."""
        self.start()
        local = self.active.get(job_id)
        if local is not None and local.record.owner == owner:
            return local.record
        found = await asyncio.to_thread(self.jobs.read, owner, job_id)
        return None if found is None else await self._settle(found)

    async def list(self, owner: str, limit: int, after: str | None) -> tuple[list[JobRecord], bool]:
        self.start()
        records, more = await asyncio.to_thread(self.jobs.list, owner, limit, after)
        fresh = []
        for record in records:
            local = self.active.get(record.id)
            if local is not None:
                fresh.append(local.record)
            elif record.lease_expired(time.time()):
                fresh.append(await self.get(owner, record.id) or record)
            else:
                fresh.append(record)
        return fresh, more

    async def _settle(self, found: VersionedJob) -> JobRecord:
        record = found.record
        now = time.time()
        if record.id in self.active or not record.lease_expired(now):
            return record
        if record.app is not None and self.app is not None and record.app != self.app:
            return record  # another app's job (a shared store): its own replicas take it
        held, did = await asyncio.to_thread(
            self.jobs.take_over,
            found,
            self.executor.holder,
            self.config.lease_s,
            self.config.max_attempts,
            now,
        )
        if did == "settled":
            logger.warning(
                "job %s: its replica stopped holding it; %s", record.id, held.record.status
            )
            self._spawn(self.notifier.notify(held.record, "completed"))
        elif did == "run":
            logger.warning("job %s: taken over here, attempt %d", record.id, held.record.attempt)
            await self._resume(held)
        return self.active[record.id].record if record.id in self.active else held.record

    async def _resume(self, held: VersionedJob) -> None:
        record = held.record
        await self.admission.renew([record.id], self.config.lease_s)

        def load() -> tuple[StoredRequest, dict[str, bytes]] | None:
            stored = self.jobs.requests.load(record.owner, record.id)
            if stored is None or stored.endpoint not in self.endpoints:
                return None
            files = {}
            for part in stored.form or ():
                if part.file_key is not None:
                    data = self.jobs.requests.load_file(part.file_key)
                    if data is None:
                        return None
                    files[part.file_key] = data
            return stored, files

        loaded = await asyncio.to_thread(load)
        if loaded is None:  # its request is gone: fail it rather than hold it forever
            job = ActiveJob(record, held.etag)
            error = APIError("internal", "The job's stored request is missing.").body()["error"]
            await self.executor.write(
                job,
                status="failed",
                error=error,
                holder=None,
                lease_expires_at=None,
                finished_at=int(time.time()),
            )
            await self.admission.release(record.id)
            return
        self._start_job(held, *loaded)

    # -- cancelling -----------------------------------------------------------------------

    async def cancel(self, record: JobRecord) -> JobRecord:
        """Cancel an unfinished job: here at once (its rows leave at the next step), or
        through the record: the replica running it finds the job cancelled at its next
        heartbeat and stops. The cancel marker makes a later takeover honour it too."""
        if not record.active:
            return record
        local = self.active.get(record.id)
        if local is not None and local.task is not None:
            return await self.executor.cancel_here(local)
        await asyncio.to_thread(self.jobs.request_cancel, record)
        now = time.time()
        cancelled_here = False

        def cancel(fresh: JobRecord) -> JobRecord | None:
            nonlocal cancelled_here
            if not fresh.active:
                return None
            cancelled_here = True
            return fresh.model_copy(
                update={
                    "status": "cancelled",
                    "finished_at": int(now),
                    "expires_at": int(now + self.args.storage.url_ttl_s),
                    "lease_expires_at": None,
                    "holder": None,
                }
            )

        stored = await asyncio.to_thread(self.jobs.update, record.owner, record.id, cancel)
        result = record if stored is None else stored.record
        if cancelled_here and result.status == "cancelled":
            self._spawn(self.notifier.notify(result, "completed"))
        return result

    # -- leases, sweeps -------------------------------------------------------------------

    def start(self) -> None:
        """Start the ticker (leases, progress) and the sweeper once."""
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
                self._spawn(self.admission.renew(list(self.active), self.config.lease_s))
            for job in list(self.active.values()):
                if renew or job.dirty:
                    try:
                        lease = time.time() + self.config.lease_s
                        await self.executor.write(job, lease_expires_at=lease)
                    except Exception:  # noqa: BLE001 - the next tick tries again
                        logger.warning("job %s: heartbeat failed", job.record.id, exc_info=True)

    async def _sweep_forever(self) -> None:
        while True:
            try:
                deleted, lost = await asyncio.to_thread(self.jobs.sweep)
                for found in lost:
                    await self._settle(found)
                if deleted or lost:
                    logger.info(
                        "job sweep: %d expired deleted, %d leases run out", deleted, len(lost)
                    )
            except Exception:  # noqa: BLE001 - the next sweep tries again
                logger.warning("job sweep failed", exc_info=True)
            await asyncio.sleep(self.config.sweep_interval_s)

    def _spawn(self, coro: Awaitable[Any]) -> None:
        task = asyncio.ensure_future(coro)
        self._background.add(task)
        task.add_done_callback(self._background.discard)
