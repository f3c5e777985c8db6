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

A job that is ``queued`` or ``running`` carries a lease (``lease_expires_at``) that
its replica renews while it holds the job. A reader that finds the lease expired
marks the job ``failed`` with ``code: "worker_lost"`` (:meth:`JobStore.settle_lost`),
so no job stays ``running`` after its replica died.
"""

from __future__ import annotations

import re
import time
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from storage.base import JSON_CONTENT_TYPE, ImageStore, check_key, check_owner
from storage.catalog import ID_PREFIX, id_created_ms, iso_utc, new_image_id

JOBS_PREFIX = "jobs/"
JOB_ID_PREFIX = "job_"
JOB_ID_RE = re.compile(r"^job_[0-9a-f]{11}[a-z2-7]{26}$")
JobStatus = Literal["queued", "running", "succeeded", "failed", "cancelled"]
ACTIVE: frozenset[str] = frozenset({"queued", "running"})
_LIST_CHUNK = 100


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
            mode="json", exclude={"owner", "lease_expires_at", "webhook_url", "webhook_events"}
        )
        body["object"] = "image.job"
        if self.webhook_url is not None:
            body["webhook"] = {"url": self.webhook_url, "events": self.webhook_events}
        return body


def worker_lost_error() -> dict[str, Any]:
    return {
        "message": "The server replica running this job stopped before it finished; "
        "submit it again.",
        "type": "server_error",
        "param": None,
        "code": "worker_lost",
    }


class JobStore:
    """Save, read, list, cancel, settle and sweep job records in one image store."""

    def __init__(self, store: ImageStore) -> None:
        self.store = store

    @staticmethod
    def valid_id(job_id: str) -> bool:
        return bool(JOB_ID_RE.match(job_id))

    def save(self, record: JobRecord) -> None:
        self.store.put(
            job_record_key(record.owner, record.id),
            record.model_dump_json().encode(),
            JSON_CONTENT_TYPE,
        )

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

    def settle_lost(self, record: JobRecord, now: float | None = None) -> JobRecord:
        """A job whose lease expired is ``failed`` (``worker_lost``); saved if it changed."""
        now = time.time() if now is None else now
        if not record.lease_expired(now):
            return record
        settled = record.model_copy(
            update={
                "status": "failed",
                "error": worker_lost_error(),
                "finished_at": int(now),
                "lease_expires_at": None,
            }
        )
        self.save(settled)
        return settled

    def delete(self, record: JobRecord) -> None:
        self.store.delete(job_cancel_key(record.owner, record.id))
        self.store.delete(job_record_key(record.owner, record.id))

    def sweep(self, now: float | None = None) -> tuple[int, list[JobRecord]]:
        """Delete expired records; settle lost ones. -> (deleted, newly lost records)."""
        now = time.time() if now is None else now
        deleted, lost = 0, []
        cursor: str | None = None
        while True:
            keys = self.store.list(JOBS_PREFIX, start_after=cursor, limit=_LIST_CHUNK)
            for key in keys:
                if "/records/" not in key:
                    continue
                record = self._load(key)
                if record is None:
                    continue
                if record.expires_at < now and not record.active:
                    self.delete(record)
                    deleted += 1
                elif record.lease_expired(now):
                    lost.append(self.settle_lost(record, now))
            if len(keys) < _LIST_CHUNK:
                return deleted, lost
            cursor = keys[-1]


def iso_seconds(epoch_s: float) -> str:
    return iso_utc(int(epoch_s * 1000))
