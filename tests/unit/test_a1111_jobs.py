"""A1111 progress, interrupt and skip: the job board, its routes, and the model-side
hook that finishes an interrupted request early with its images as they stand."""

from __future__ import annotations

from pathlib import Path

import pytest

from common.job import GenerationJob
from deployments.model import server as model_server
from deployments.model.request_mode.engine import DiffusersEngine
from deployments.model.scheduler.submission import Submission
from serve_app.routes.a1111_jobs import JobBoard
from tests.unit.test_dialect_routes import App
from tests.unit.test_step_loop import SIZE, job, step_server


def test_progress_is_per_caller_and_idle_is_job_count_zero() -> None:
    board = JobBoard()
    assert board.status("a")["state"]["job_count"] == 0
    board.start("a", "r1", 1, 20)
    board.start("a", "r2", 1, 20)
    board.start("b", "r3", 1, 20)
    board.progress("r1", 5, 20)
    mine = board.status("a")
    assert mine["progress"] == 0.25 and mine["eta_relative"] >= 0
    state = mine["state"]
    assert (state["job_count"], state["sampling_step"], state["sampling_steps"]) == (2, 5, 20)
    assert board.status("b")["state"]["sampling_step"] == 0
    board.finish("r1")
    board.finish("r2")
    assert board.status("a")["state"]["job_count"] == 0


def test_interrupt_ends_only_the_callers_jobs_and_skip_only_running_ones() -> None:
    board = JobBoard()
    board.start("a", "running", 1, 20)
    board.start("a", "queued", 1, 20)
    board.start("b", "other", 1, 20)
    board.progress("running", 3, 20)
    assert board.interrupt("a", running_only=True) == 1
    assert board.should_finish("running") and not board.should_finish("queued")
    assert board.status("a")["state"]["skipped"] is True
    assert board.interrupt("a") == 2
    assert board.should_finish("queued") and not board.should_finish("other")
    assert board.status("a")["state"]["interrupted"] is True
    assert board.status("b")["state"]["interrupted"] is False


def test_current_image_is_the_running_jobs_latest_preview() -> None:
    import base64
    import io

    import numpy as np
    from PIL import Image

    from serve_app.routes.a1111_jobs import JobBoard

    board = JobBoard()
    board.start("a", "r", 1, 10)
    assert board.status("a")["current_image"] is None  # no step yet
    board.progress("r", 2, 10)
    png = io.BytesIO()
    Image.fromarray(np.full((8, 8, 3), 200, np.uint8)).save(png, format="PNG")
    board.preview("r", base64.b64encode(png.getvalue()).decode())  # as the encoder sends it
    shown = board.status("a")["current_image"]
    image = Image.open(io.BytesIO(base64.b64decode(shown)))
    assert image.size == (8, 8) and image.getpixel((0, 0)) == (200, 200, 200)
    assert board.status("a", skip_current_image=True)["current_image"] is None
    assert board.status("b")["current_image"] is None  # another caller sees nothing


def test_routes_answer_in_a1111_shapes(tmp_path: Path) -> None:
    app = App(tmp_path)
    progress = app.client.get("/sdapi/v1/progress").json()
    assert set(progress) == {"progress", "eta_relative", "state", "current_image", "textinfo"}
    assert progress["state"]["job_count"] == 0
    for path in ("/sdapi/v1/interrupt", "/sdapi/v1/skip"):
        response = app.client.post(path)
        assert (response.status_code, response.json()) == (200, None)
    txt2img = app.client.post("/sdapi/v1/txt2img", json={"prompt": "x", "steps": 3})
    assert txt2img.status_code == 200
    assert app.client.get("/sdapi/v1/progress").json()["state"]["job_count"] == 0


@pytest.fixture(scope="module")
def engine() -> DiffusersEngine:
    from tests.support.engines import tiny_config

    return DiffusersEngine(tiny_config())


async def test_an_interrupted_request_finishes_early_with_its_images(
    engine: DiffusersEngine, monkeypatch: pytest.MonkeyPatch
) -> None:
    asked: list[str] = []

    async def should_finish(j: GenerationJob) -> bool:
        asked.append(j.request_id)
        return len(asked) >= 2  # interrupted after the second step

    monkeypatch.setattr(model_server, "should_finish", should_finish)
    server = step_server(engine)
    j = job("i", 1, 2, steps=40, report_progress=True, control="board")
    events = [e async for e in server._submit(Submission(j, stream=True))]
    assert events[-1].kind == "final" and events[-1].pixels.shape == (2, SIZE, SIZE, 3)
    steps = [e.step for e in events if e.kind == "progress"]
    assert steps and max(steps) < 10  # far fewer than 40
    plain = Submission(job("p", 3, steps=4, report_progress=True), stream=True)
    assert [e.kind async for e in server._submit(plain)][-1] == "final"
    assert asked.count("p") == 0  # no control named: the board is never asked


async def test_hires_fix_runs_two_passes_on_the_replica(engine: DiffusersEngine) -> None:
    from common.job import HiresSpec

    server = step_server(engine)
    hires = HiresSpec(SIZE * 2, SIZE * 2, "lanczos", 0.5, 4)
    j = job("h", 1, 2, steps=3, report_progress=True, hires=hires)
    events = [e async for e in server._submit(Submission(j, stream=True))]
    finals = [e for e in events if e.kind == "final"]
    assert len(finals) == 1 and finals[0].pixels.shape == (2, SIZE * 2, SIZE * 2, 3)
    steps = [(e.step, e.total_steps) for e in events if e.kind == "progress"]
    # The first pass's 3 steps, then each image's img2img pass: int(4 * 0.5) = 2 steps.
    assert steps == [(1, 3), (2, 3), (3, 3), (1, 2), (2, 2), (1, 2), (2, 2)]
