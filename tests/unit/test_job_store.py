"""The store-backed job records: ids, owners, listing order, cancel markers, leases, sweeps."""

from __future__ import annotations

import time
from pathlib import Path

from storage.jobs import JobRecord, JobStore, Progress, job_created_ms, new_job_id
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


def test_an_expired_lease_settles_as_worker_lost(tmp_path: Path) -> None:
    jobs = store(tmp_path)
    live = record(status="running")
    lost = record(status="running", lease_expires_at=time.time() - 1)
    for r in (live, lost):
        jobs.save(r)
    assert jobs.settle_lost(live) == live
    settled = jobs.settle_lost(lost)
    assert settled.status == "failed" and settled.error["code"] == "worker_lost"
    assert jobs.get("alice", lost.id).status == "failed"


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
    deleted, settled = jobs.sweep(now)
    assert deleted == 1 and [r.id for r in settled] == [lost.id]
    assert jobs.get("alice", expired.id) is None and not jobs.cancel_requested(expired)
    assert jobs.get("alice", kept.id) is not None
    assert jobs.get("bob", lost.id).error["code"] == "worker_lost"


def test_public_object_hides_owner_and_lease() -> None:
    body = record(webhook_url="https://hooks.example/x", webhook_events=["completed"]).public()
    assert "owner" not in body and "lease_expires_at" not in body
    assert body["object"] == "image.job"
    assert body["webhook"] == {"url": "https://hooks.example/x", "events": ["completed"]}
    assert set(body) >= {"id", "status", "created_at", "model", "progress", "result", "error"}
