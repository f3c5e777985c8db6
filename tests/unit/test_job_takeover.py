"""Job takeover between replicas, in-process: each "replica" is its own app (its own
event loop and runner) on one shared local store. A replica "dies" when its loop
stops with the job mid-run: nothing more of it is written, as after a SIGKILL."""

from __future__ import annotations

import io
import json
import threading
import time
from pathlib import Path
from typing import Any

import pytest
from PIL import Image
from starlette.testclient import TestClient

from serve_app.routes import asgi_app
from tests.support.webhook_receiver import webhook_receiver
from tests.unit.test_job_routes import HOOK_HOST, SECRET, StreamingModel, make_ingress, wait_for

ASYNC = {"prefer": "respond-async"}
LEASE_S = 2.0  # make_ingress's jobs.lease_s


def replica(tmp_path: Path, model: StreamingModel, **jobs: Any) -> TestClient:
    return TestClient(asgi_app(make_ingress(tmp_path, model, **jobs)))


def job_left_running(tmp_path: Path, body: dict[str, Any] | None = None, **jobs: Any) -> str:
    """Submit on a replica that then dies mid-run; -> the job id."""
    with replica(tmp_path, StreamingModel(step_s=0.2), **jobs) as doomed:
        made = doomed.post("/v1/images/generations", json=body or {"prompt": "x"}, headers=ASYNC)
        assert made.status_code == 202, made.text
        job_id = made.json()["id"]
        wait_for(doomed, job_id, "running")
    return job_id


def test_a_job_whose_replica_died_runs_again_from_its_stored_request(tmp_path: Path) -> None:
    job_id = job_left_running(tmp_path, {"prompt": "kept", "n": 2, "seed": 5})
    model = StreamingModel()
    with replica(tmp_path, model) as survivor:
        done = wait_for(survivor, job_id, "succeeded")
    assert done["attempt"] == 2 and len(done["result"]["data"]) == 2
    [rerun] = model.jobs
    assert rerun.prompt == "kept" and list(rerun.seeds) == [5, 6]


def test_a_multipart_job_reruns_with_its_stored_image(tmp_path: Path) -> None:
    png = io.BytesIO()
    Image.new("RGB", (32, 32), (200, 10, 10)).save(png, format="PNG")
    with replica(tmp_path, StreamingModel(step_s=0.2)) as doomed:
        made = doomed.post(
            "/v1/images/edits",
            data={"prompt": "edit"},
            files={"image": ("a.png", png.getvalue(), "image/png")},
            headers=ASYNC,
        )
        assert made.status_code == 202, made.text
        job_id = made.json()["id"]
        wait_for(doomed, job_id, "running")
    assert list((tmp_path / "jobs" / "default" / "inputs" / job_id).iterdir())
    model = StreamingModel()
    with replica(tmp_path, model) as survivor:
        done = wait_for(survivor, job_id, "succeeded")
    assert done["attempt"] == 2
    [rerun] = model.jobs
    assert rerun.init_image is not None and rerun.init_image[0, 0, 0] > 150


@pytest.mark.parametrize("run", range(5))
def test_two_replicas_racing_for_one_expired_lease_run_it_once(tmp_path: Path, run: int) -> None:
    job_id = job_left_running(tmp_path)
    models = [StreamingModel(), StreamingModel()]
    with replica(tmp_path, models[0]) as b, replica(tmp_path, models[1]) as c:
        time.sleep(LEASE_S + 0.2)
        barrier = threading.Barrier(2)

        def read(client: TestClient) -> None:
            barrier.wait()
            client.get(f"/v1/images/jobs/{job_id}")

        threads = [threading.Thread(target=read, args=(x,)) for x in (b, c)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        done = wait_for(b, job_id, "succeeded")
    assert done["attempt"] == 2
    assert len(models[0].jobs) + len(models[1].jobs) == 1, "exactly one replica ran it"


def test_a_cancel_before_the_takeover_is_honoured(tmp_path: Path) -> None:
    job_id = job_left_running(tmp_path)
    model = StreamingModel()
    with replica(tmp_path, model) as survivor:
        cancelled = survivor.delete(f"/v1/images/jobs/{job_id}")
        assert cancelled.status_code == 200 and cancelled.json()["status"] == "cancelled"
        time.sleep(LEASE_S + 0.2)
        assert survivor.get(f"/v1/images/jobs/{job_id}").json()["status"] == "cancelled"
    assert model.jobs == []


def test_after_max_attempts_the_job_fails_with_worker_lost(tmp_path: Path) -> None:
    job_id = job_left_running(tmp_path, max_attempts=1)
    model = StreamingModel()
    with replica(tmp_path, model, max_attempts=1) as survivor:
        failed = wait_for(survivor, job_id, "failed")
    assert failed["error"]["code"] == "worker_lost" and failed["attempt"] == 1
    assert model.jobs == []


def test_a_replica_that_lost_its_lease_stops_and_writes_nothing(tmp_path: Path) -> None:
    slow = StreamingModel(step_s=0.2)
    with replica(tmp_path, slow) as first:
        made = first.post("/v1/images/generations", json={"prompt": "x"}, headers=ASYNC)
        job_id = made.json()["id"]
        wait_for(first, job_id, "running")
        # Another replica takes the job over (as if this one had stalled past its lease).
        path = next((tmp_path / "jobs" / "default" / "records").glob(f"{job_id}.json"))

        record = json.loads(path.read_text())
        record.update(holder="elsewhere", attempt=2, lease_expires_at=time.time() + 60)
        path.write_text(json.dumps(record))
        deadline = time.monotonic() + 5
        while not slow.streams[0].cancelled and time.monotonic() < deadline:
            time.sleep(0.05)
        assert slow.streams[0].cancelled, "the lease holder's stream was not stopped"
        time.sleep(0.5)
    after = json.loads(path.read_text())
    assert after == record  # not one more write from the replica that lost the lease


class HangsOnce(StreamingModel):
    """The first call never answers (its replica went with its node); later ones do."""

    def remote(self, job: Any, spec: Any) -> Any:
        stream = super().remote(job, spec)
        if len(self.streams) == 1:
            stream.step_s = 3600
        return stream


def test_an_attempt_past_the_deadline_runs_again(tmp_path: Path) -> None:
    model = HangsOnce()
    ingress = make_ingress(tmp_path, model)
    short = ingress.args.ingress.model_copy(update={"request_timeout_s": 0.5})
    ingress.args = ingress.args.model_copy(update={"ingress": short})
    with TestClient(asgi_app(ingress)) as client:
        made = client.post("/v1/images/generations", json={"prompt": "x"}, headers=ASYNC)
        done = wait_for(client, made.json()["id"], "succeeded")
    assert done["attempt"] == 2 and len(model.jobs) == 2


def test_a_rerun_job_keeps_its_webhook_ids(tmp_path: Path) -> None:
    with webhook_receiver(HOOK_HOST, SECRET) as receiver:
        body = {
            "prompt": "x",
            "webhook_url": receiver.url(),
            "webhook_events": ["started", "completed"],
        }
        job_id = job_left_running(tmp_path, body)
        with replica(tmp_path, StreamingModel()) as survivor:
            wait_for(survivor, job_id, "succeeded")
            deadline = time.monotonic() + 20
            while time.monotonic() < deadline and len(receiver.deliveries) < 3:
                time.sleep(0.05)
    events = [(d.verified["type"], d.headers["webhook-id"]) for d in receiver.deliveries]
    assert sorted(events) == [
        ("image.job.completed", f"msg_{job_id}_completed"),
        ("image.job.started", f"msg_{job_id}_started"),  # attempt 1
        ("image.job.started", f"msg_{job_id}_started"),  # attempt 2: the same id
    ]


def test_a_body_that_cannot_be_stored_is_a_clear_400(tmp_path: Path) -> None:
    with replica(tmp_path, StreamingModel()) as client:
        utf16 = json.dumps({"prompt": "x"}).encode("utf-16")
        made = client.post(
            "/v1/images/generations",
            content=utf16,
            headers={**ASYNC, "content-type": "application/json"},
        )
    assert made.status_code == 400, made.text
    assert made.json()["error"]["code"] == "invalid_json"


def test_another_apps_replica_never_takes_the_job_over(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Two Serve apps on one store (other models, other limits): a job waits for its own
    app's replicas, whose takeover then runs it."""
    from serve_app.jobs import service

    monkeypatch.setattr(service, "current_app", lambda: "app-a")
    job_id = job_left_running(tmp_path)
    monkeypatch.setattr(service, "current_app", lambda: "app-b")
    stranger = StreamingModel()
    with replica(tmp_path, stranger) as other_app:
        time.sleep(LEASE_S + 0.2)
        seen = other_app.get(f"/v1/images/jobs/{job_id}").json()
        assert seen["status"] in ("queued", "running") and seen["attempt"] == 1
    assert stranger.jobs == []
    monkeypatch.setattr(service, "current_app", lambda: "app-a")
    own = StreamingModel()
    with replica(tmp_path, own) as same_app:
        done = wait_for(same_app, job_id, "succeeded")
    assert done["attempt"] == 2 and len(own.jobs) == 1
