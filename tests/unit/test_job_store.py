"""The store-backed job records: ids, owners, listing order, cancel markers, leases, sweeps."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from storage.job_requests import StoredRequest
from storage.jobs import (
    JobRecord,
    JobStore,
    LostLease,
    Progress,
    VersionedJob,
    job_created_ms,
    new_job_id,
)
from storage.local import LocalImageStore
from storage.signing import UrlSigner


def store(tmp_path: Path) -> JobStore:
    return JobStore(LocalImageStore(str(tmp_path), UrlSigner("k" * 32, 60)))


def record(owner: str = "alice", **update: object) -> JobRecord:
    now = time.time()
    fields = {
        "id": new_job_id(),
        "owner": owner,
        "endpoint": "/v1/images/generations",
        "status": "queued",
        "created_at": int(now),
        "model": "tiny",
        "expires_at": int(now + 3600),
        "lease_expires_at": now + 30,
        **update,
    }
    return JobRecord.model_validate(fields)


def test_ids_are_time_ordered_newest_first() -> None:
    older, newer = new_job_id(1_000_000), new_job_id(2_000_000)
    assert newer < older
    assert job_created_ms(older) == 1_000_000
    assert JobStore.valid_id(older) and not JobStore.valid_id("image_" + older[4:])


def test_owners_are_separate_and_lists_are_newest_first(tmp_path: Path) -> None:
    jobs = store(tmp_path)
    made = []
    for i in range(5):
        made.append(record(id=new_job_id(1_000_000 + i)))
        jobs.save(made[-1])
    jobs.save(record(owner="bob"))
    assert jobs.get("bob", made[0].id) is None
    page, more = jobs.list("alice", limit=3)
    assert [r.id for r in page] == [r.id for r in reversed(made)][:3] and more
    rest, more = jobs.list("alice", limit=3, after=page[-1].id)
    assert [r.id for r in rest] == [made[1].id, made[0].id] and not more


def stored(jobs: JobStore, job: JobRecord) -> VersionedJob:
    jobs.requests.save(job.owner, job.id, StoredRequest(endpoint=job.endpoint, body="{}"))
    return jobs.create(job)


def test_an_expired_lease_is_taken_over_with_the_next_attempt(tmp_path: Path) -> None:
    jobs = store(tmp_path)
    now = time.time()
    live = stored(jobs, record(status="running", holder="a"))
    lost = stored(jobs, record(status="running", holder="a", lease_expires_at=now - 1))
    assert jobs.take_over(live, "b", 30, 3, now) == (live, "none")
    held, did = jobs.take_over(lost, "b", 30, 3, now)
    assert did == "run" and held.record.attempt == 2 and held.record.holder == "b"
    assert held.record.status == "queued" and held.record.lease_expires_at == now + 30
    assert jobs.read("alice", lost.record.id) == held


def test_exactly_one_of_two_takeovers_wins(tmp_path: Path) -> None:
    jobs = store(tmp_path)
    now = time.time()
    lost = stored(jobs, record(status="running", holder="a", lease_expires_at=now - 1))
    first, did_first = jobs.take_over(lost, "b", 30, 3, now)
    second, did_second = jobs.take_over(lost, "c", 30, 3, now)  # read the same version
    assert (did_first, did_second) == ("run", "none")
    assert second.record.holder == "b" and jobs.read("alice", lost.record.id) == first


def test_after_max_attempts_or_a_cancel_a_lost_job_ends(tmp_path: Path) -> None:
    jobs = store(tmp_path)
    now = time.time()
    spent = stored(jobs, record(status="running", attempt=3, lease_expires_at=now - 1))
    held, did = jobs.take_over(spent, "b", 30, 3, now)
    assert did == "settled" and held.record.status == "failed"
    assert held.record.error is not None and held.record.error["code"] == "worker_lost"
    cancelled = stored(jobs, record(status="running", lease_expires_at=now - 1))
    jobs.request_cancel(cancelled.record)
    held, did = jobs.take_over(cancelled, "b", 30, 3, now)
    assert did == "settled" and held.record.status == "cancelled"
    bare = jobs.create(record(status="running", lease_expires_at=now - 1))  # no request
    assert jobs.take_over(bare, "b", 30, 3, now)[0].record.status == "failed"


def test_update_keeps_other_writers_changes(tmp_path: Path) -> None:
    jobs = store(tmp_path)
    first = stored(jobs, record())
    jobs.update("alice", first.record.id, lambda r: r.model_copy(update={"model": "other"}))
    # A writer holding the old version re-reads, and its change lands on top.
    after = jobs.update(
        "alice", first.record.id, lambda r: r.model_copy(update={"status": "running"}), first
    )
    assert after is not None and (after.record.model, after.record.status) == ("other", "running")
    with pytest.raises(LostLease):
        jobs.update("alice", first.record.id, lambda r: (_ for _ in ()).throw(LostLease()))


def test_cancel_marker_is_separate_from_the_record(tmp_path: Path) -> None:
    jobs = store(tmp_path)
    job = record()
    jobs.save(job)
    assert not jobs.cancel_requested(job)
    jobs.request_cancel(job)
    jobs.save(job.model_copy(update={"progress": Progress(step=1, total_steps=2)}))
    assert jobs.cancel_requested(job)  # the runner's rewrite does not erase it


def test_sweep_deletes_expired_and_settles_lost(tmp_path: Path) -> None:
    jobs = store(tmp_path)
    now = time.time()
    expired = record(status="succeeded", expires_at=int(now - 1), lease_expires_at=None)
    kept = record(status="succeeded", lease_expires_at=None)
    lost = record(owner="bob", status="queued", lease_expires_at=now - 1)
    for r in (expired, kept, lost):
        jobs.save(r)
    jobs.request_cancel(expired)
    jobs.requests.save("alice", expired.id, StoredRequest(endpoint=expired.endpoint, body="{}"))
    deleted, run_out = jobs.sweep(now)
    assert deleted == 1 and [found.record.id for found in run_out] == [lost.id]
    assert jobs.get("alice", expired.id) is None and not jobs.cancel_requested(expired)
    assert jobs.requests.load("alice", expired.id) is None  # its request went with it
    assert jobs.get("alice", kept.id) is not None


def test_public_object_hides_owner_and_lease() -> None:
    body = record(webhook_url="https://hooks.example/x", webhook_events=["completed"]).public()
    assert "owner" not in body and "lease_expires_at" not in body
    assert body["object"] == "image.job"
    assert body["webhook"] == {"url": "https://hooks.example/x", "events": ["completed"]}
    assert set(body) >= {"id", "status", "created_at", "model", "progress", "result", "error"}
