"""Async job records kept in the image store itself, like the imagine image records.

Layout, per owner (``storage.base.check_owner``):

- ``jobs/<owner>/records/<job id>.json``: the :class:`JobRecord`, rewritten on every change.
- ``jobs/<owner>/cancels/<job id>.json``: a cancel request. Only ``DELETE`` writes it,
  so a cancel made on one ingress replica cannot be overwritten by the replica running
  the job (which rewrites the record); that replica sees it at its next heartbeat.

Every ingress replica reads the same store, so every replica sees every job, and an
ingress restart loses nothing that was written. Ids are the image ids' scheme
(inverted creation time + 130 random bits, see ``storage.catalog``) with a ``job_``
prefix: unguessable, and the store's ascending key order is newest first.

A job that is ``queued`` or ``running`` carries a lease (``lease_expires_at``) and a
``holder`` (the token of the replica running its current ``attempt``). Every write of
a record is conditional on the version read (S3 ``If-Match``, the local store's
locked compare-and-rename, see ``ImageStore.put_if``), so two writers never both
win. A reader that finds the lease expired takes the job over
(:meth:`JobStore.take_over`): the job is ``cancelled`` if a cancel was recorded,
``failed`` with ``worker_lost`` once ``max_attempts`` attempts ran, else queued again
with ``attempt + 1`` and the reader as holder, to run from its stored request
(``storage.job_requests``).
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable
from typing import Any, Literal, NamedTuple

from pydantic import BaseModel, ConfigDict, Field

from common.errors import StorageUnavailable
from storage.base import JOBS_PREFIX, JSON_CONTENT_TYPE, ImageStore, check_key, check_owner
from storage.catalog import ID_PREFIX, id_created_ms, iso_utc, new_image_id
from storage.job_requests import JobRequests

JOB_ID_PREFIX = "job_"
JOB_ID_RE = re.compile(r"^job_[0-9a-f]{11}[a-z2-7]{26}$")
JobStatus = Literal["queued", "running", "succeeded", "failed", "cancelled"]
ACTIVE: frozenset[str] = frozenset({"queued", "running"})
_LIST_CHUNK = 100
_MAX_CAS_TRIES = 20


def new_job_id(now_ms: int | None = None) -> str:
    """The image id scheme (time-ordered, 130 random bits) under the ``job_`` prefix."""
    return JOB_ID_PREFIX + new_image_id(now_ms)[len(ID_PREFIX) :]


def job_created_ms(job_id: str) -> int:
    return id_created_ms(ID_PREFIX + job_id[len(JOB_ID_PREFIX) :])


def job_records_prefix(owner: str) -> str:
    return f"{JOBS_PREFIX}{check_owner(owner)}/records/"


def job_record_key(owner: str, job_id: str) -> str:
    return check_key(f"{job_records_prefix(owner)}{job_id}.json")


def job_cancel_key(owner: str, job_id: str) -> str:
    return check_key(f"{JOBS_PREFIX}{check_owner(owner)}/cancels/{job_id}.json")


class Progress(BaseModel):
    step: int
    total_steps: int


class WebhookAttempt(BaseModel):
    """One delivery attempt: what was sent when, and what came back."""

    event: str
    attempt: int
    at: str
    status_code: int | None = None
    error: str | None = None
    duration_ms: int
    delivered: bool


class JobRecord(BaseModel):
    """The stored job; unknown keys from newer versions are ignored on read."""

    model_config = ConfigDict(extra="ignore")

    id: str
    owner: str
    endpoint: str
    status: JobStatus
    created_at: int  # epoch seconds, as OpenAI's ``created``
    model: str | None
    progress: Progress | None = None
    result: dict[str, Any] | None = None
    error: dict[str, Any] | None = None
    started_at: int | None = None
    finished_at: int | None = None
    expires_at: int
    lease_expires_at: float | None = None
    attempt: int = 1
    holder: str | None = None
    # The Serve application that accepted it: only that app's replicas take it over
    # (another app sharing the store runs other models and limits). None: any.
    app: str | None = None
    webhook_url: str | None = None
    webhook_events: list[str] = Field(default_factory=list)
    webhook_attempts: list[WebhookAttempt] = Field(default_factory=list)

    @property
    def active(self) -> bool:
        return self.status in ACTIVE

    def lease_expired(self, now: float) -> bool:
        return self.active and (self.lease_expires_at is None or self.lease_expires_at < now)

    def public(self) -> dict[str, Any]:
        """The job object clients see (no owner, no lease)."""
        body = self.model_dump(
            mode="json",
            exclude={"owner", "lease_expires_at", "holder", "webhook_url", "webhook_events"},
        )
        body["object"] = "image.job"
        if self.webhook_url is not None:
            body["webhook"] = {"url": self.webhook_url, "events": self.webhook_events}
        return body


class VersionedJob(NamedTuple):
    """A record and the store's version tag of what was read or written."""

    record: JobRecord
    etag: str


class LostLease(Exception):
    """The job moved on without this writer: taken over, cancelled, or finished."""


Update = Callable[[JobRecord], JobRecord | None]
# What a takeover did: "run" (the caller holds the job now and must run it again),
# "settled" (the caller ended it: cancelled, or failed after max_attempts), or
# "none" (the lease was live after all, or another replica won the race).
TakeOver = Literal["run", "settled", "none"]


def worker_lost_error(attempts: int = 1) -> dict[str, Any]:
    return {
        "message": f"The server replica running this job stopped before it finished, "
        f"{attempts} time(s) (jobs.max_attempts); submit it again.",
        "type": "server_error",
        "param": None,
        "code": "worker_lost",
    }


class JobStore:
    """Save, read, list, cancel, settle and sweep job records in one image store."""

    def __init__(self, store: ImageStore) -> None:
        self.store = store
        self.requests = JobRequests(store)

    @staticmethod
    def valid_id(job_id: str) -> bool:
        return bool(JOB_ID_RE.match(job_id))

    def save(self, record: JobRecord) -> None:
        self.store.put(
            job_record_key(record.owner, record.id),
            record.model_dump_json().encode(),
            JSON_CONTENT_TYPE,
        )

    def create(self, record: JobRecord) -> VersionedJob:
        """Write a new record; its id is fresh, so the create-only write always wins."""
        etag = self.store.put_if(
            job_record_key(record.owner, record.id),
            record.model_dump_json().encode(),
            JSON_CONTENT_TYPE,
            None,
        )
        if etag is None:
            raise StorageUnavailable(f"job {record.id} exists already")
        return VersionedJob(record, etag)

    def read(self, owner: str, job_id: str) -> VersionedJob | None:
        if not self.valid_id(job_id):
            return None
        found = self.store.get_versioned(job_record_key(owner, job_id))
        if found is None:
            return None
        return VersionedJob(JobRecord.model_validate_json(found.data), found.etag)

    def write(self, record: JobRecord, etag: str) -> VersionedJob | None:
        """Replace the record only if it is still at ``etag``; ``None`` if it moved."""
        new = self.store.put_if(
            job_record_key(record.owner, record.id),
            record.model_dump_json().encode(),
            JSON_CONTENT_TYPE,
            etag,
        )
        return None if new is None else VersionedJob(record, new)

    def update(
        self, owner: str, job_id: str, change: Update, known: VersionedJob | None = None
    ) -> VersionedJob | None:
        """Read-modify-write until it wins: ``change`` maps the current record to the new
        one (``None``: leave it; :class:`LostLease` propagates). ``known`` is tried first
        without a read. -> what is stored now; ``None`` if the job is gone."""
        current = known or self.read(owner, job_id)
        for _ in range(_MAX_CAS_TRIES):
            if current is None:
                return None
            changed = change(current.record)
            if changed is None:
                return current
            written = self.write(changed, current.etag)
            if written is not None:
                return written
            current = self.read(owner, job_id)
        raise StorageUnavailable(f"job {job_id}: too many concurrent writers")

    def take_over(
        self, found: VersionedJob, holder: str, lease_s: float, max_attempts: int, now: float
    ) -> tuple[VersionedJob, TakeOver]:
        """Settle a job whose lease ran out, conditionally on the version read.

        -> (what is stored now, what this call did, see :data:`TakeOver`).
        A cancel recorded before makes it ``cancelled``; ``max_attempts`` attempts
        make it ``failed`` (``worker_lost``); a job without a stored request cannot
        run again and fails too. Losing the race returns the winner's record.
        """
        record = found.record
        if not record.lease_expired(now):
            return found, "none"
        done = {"finished_at": int(now), "lease_expires_at": None, "holder": None}
        did: TakeOver = "settled"
        if self.cancel_requested(record):
            update: dict[str, Any] = {"status": "cancelled", **done}
        elif record.attempt >= max_attempts or self.requests.load(record.owner, record.id) is None:
            update = {"status": "failed", "error": worker_lost_error(record.attempt), **done}
        else:
            did = "run"
            update = {
                "status": "queued",
                "attempt": record.attempt + 1,
                "holder": holder,
                "lease_expires_at": now + lease_s,
                "progress": None,
                "error": None,
            }
        written = self.write(record.model_copy(update=update), found.etag)
        if written is not None:
            return written, did
        return (self.read(record.owner, record.id) or found), "none"

    def get(self, owner: str, job_id: str) -> JobRecord | None:
        """The record, or ``None`` (unknown id, another owner's, or malformed)."""
        if not self.valid_id(job_id):
            return None
        return self._load(job_record_key(owner, job_id))

    def _load(self, key: str) -> JobRecord | None:
        raw = self.store.get(key)
        return None if raw is None else JobRecord.model_validate_json(raw)

    def list(
        self, owner: str, limit: int, after: str | None = None
    ) -> tuple[list[JobRecord], bool]:
        """Newest first: up to ``limit`` records older than ``after``, and whether more exist."""
        prefix = job_records_prefix(owner)
        cursor = job_record_key(owner, after) if after and self.valid_id(after) else None
        found: list[JobRecord] = []
        while True:
            keys = self.store.list(prefix, start_after=cursor, limit=limit + 1)
            for key in keys:
                record = self._load(key)  # None: deleted since the listing
                if record is not None:
                    found.append(record)
                    if len(found) > limit:
                        return found[:limit], True
            if len(keys) < limit + 1:
                return found, False
            cursor = keys[-1]

    def request_cancel(self, record: JobRecord) -> None:
        self.store.put(job_cancel_key(record.owner, record.id), b"{}", JSON_CONTENT_TYPE)

    def cancel_requested(self, record: JobRecord) -> bool:
        return self.store.head(job_cancel_key(record.owner, record.id)) is not None

    def delete(self, record: JobRecord) -> None:
        self.requests.delete(record.owner, record.id)
        self.store.delete(job_cancel_key(record.owner, record.id))
        self.store.delete(job_record_key(record.owner, record.id))

    def sweep(self, now: float | None = None) -> tuple[int, list[VersionedJob]]:
        """Delete expired records. -> (deleted, records whose lease ran out, to take over)."""
        now = time.time() if now is None else now
        deleted, lost = 0, []
        cursor: str | None = None
        while True:
            keys = self.store.list(JOBS_PREFIX, start_after=cursor, limit=_LIST_CHUNK)
            for key in keys:
                if "/records/" not in key:
                    continue
                found = self.store.get_versioned(key)
                if found is None:
                    continue
                record = JobRecord.model_validate_json(found.data)
                if record.expires_at < now and not record.active:
                    self.delete(record)
                    deleted += 1
                elif record.lease_expired(now):
                    lost.append(VersionedJob(record, found.etag))
            if len(keys) < _LIST_CHUNK:
                return deleted, lost
            cursor = keys[-1]


def iso_seconds(epoch_s: float) -> str:
    return iso_utc(int(epoch_s * 1000))
