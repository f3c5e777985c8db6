"""``GET /sdapi/v1/progress``, ``POST /sdapi/v1/interrupt`` and ``POST /sdapi/v1/skip``.

A1111 clients poll progress until ``state.job_count`` is 0 before they send work, and
SillyTavern calls interrupt when its user presses stop. Each caller (the Basic-auth
user, else the client address, as for ``/options``) sees and controls only its own
jobs.

The registry of running A1111 jobs is :class:`JobBoard`. Inside Serve it is one named
Ray actor per application (``imagegen-a1111-jobs-<app>``, created by the first
ingress replica that needs it), so every ingress replica sees every job and a caller's
interrupt reaches the replica that runs its request. Outside Serve (unit tests) it is
a plain object.

How an interrupt ends a job early with "the image as it stands": the route runs the
job on the model's streamed path with per-step progress, and names the board in
``GenerationJob.control``. After each step the model replica asks the board whether
the request should finish (``should_finish``); once it says so, the request's rows
leave the loop at their next step and are decoded as they are, and the request
answers 200 with those images (``deployments/model/interrupts.py``). ``skip`` does the
same for the caller's jobs already sampling; ``interrupt`` for those queued too.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from typing import Any

logger = logging.getLogger("imagegen.a1111")

ACTOR_PREFIX = "imagegen-a1111-jobs-"


@dataclass
class Tracked:
    caller: str
    request_id: str
    images: int
    steps: int
    queued_at: float = field(default_factory=time.time)
    started_at: float | None = None
    step: int = 0
    interrupted: bool = False
    skipped: bool = False
    # The latest latent-size preview of its first image, base64 PNG (current_image).
    current_image: str | None = None


class JobBoard:
    """The running and queued A1111 jobs of every caller (plain data, fast methods)."""

    def __init__(self) -> None:
        self.jobs: dict[str, Tracked] = {}

    def start(self, caller: str, request_id: str, images: int, steps: int) -> None:
        self.jobs[request_id] = Tracked(caller, request_id, images, steps)

    def progress(self, request_id: str, step: int, total: int) -> None:
        job = self.jobs.get(request_id)
        if job is not None:
            if job.started_at is None:
                job.started_at = time.time()
            job.step, job.steps = step, total

    def preview(self, request_id: str, image_b64: str) -> None:
        job = self.jobs.get(request_id)
        if job is not None:
            job.current_image = image_b64

    def finish(self, request_id: str) -> None:
        self.jobs.pop(request_id, None)

    def interrupt(self, caller: str, running_only: bool = False) -> int:
        """Mark the caller's jobs (``running_only``: those sampling) to end early."""
        marked = 0
        for job in self.jobs.values():
            if job.caller != caller or (running_only and job.started_at is None):
                continue
            if running_only:
                job.skipped = True
            else:
                job.interrupted = True
            marked += 1
        return marked

    def should_finish(self, request_id: str) -> bool:
        job = self.jobs.get(request_id)
        return job is not None and (job.interrupted or job.skipped)

    def status(self, caller: str, skip_current_image: bool = False) -> dict[str, Any]:
        """A1111's ``ProgressResponse`` for one caller; ``current_image`` is the running
        job's latest preview (latent resolution) unless ``skip_current_image``."""
        mine = sorted(
            (job for job in self.jobs.values() if job.caller == caller),
            key=lambda job: job.queued_at,
        )
        running = [job for job in mine if job.started_at is not None]
        current = running[0] if running else (mine[0] if mine else None)
        progress = eta = 0.0
        if current is not None and current.started_at is not None and current.steps:
            progress = min(current.step / current.steps, 1.0)
            elapsed = time.time() - current.started_at
            eta = elapsed / progress - elapsed if progress > 0 else 0.0
        state = {
            "skipped": any(job.skipped for job in mine),
            "interrupted": any(job.interrupted for job in mine),
            "stopping_generation": False,
            "job": f"task({current.request_id})" if current else "",
            "job_count": len(mine),
            "job_timestamp": time.strftime(
                "%Y%m%d%H%M%S", time.localtime(current.queued_at if current else time.time())
            ),
            "job_no": 0,
            "sampling_step": current.step if current else 0,
            "sampling_steps": current.steps if current else 0,
        }
        return {
            "progress": round(progress, 4),
            "eta_relative": round(eta, 3),
            "state": state,
            "current_image": (
                None if skip_current_image or current is None else current.current_image
            ),
            "textinfo": None,
        }


class Board:
    """An awaitable front for the board: the named actor inside Serve, else local."""

    def __init__(self) -> None:
        self._local: JobBoard | None = None
        self._actor: Any = None
        self.actor_name: str | None = None

    def _target(self) -> Any:
        if self._actor is not None or self._local is not None:
            return self._actor or self._local
        try:
            import ray
            from ray import serve

            app = serve.get_replica_context().app_name
        except Exception:  # noqa: BLE001 - not inside a Serve replica (unit tests)
            self._local = JobBoard()
            return self._local
        self.actor_name = ACTOR_PREFIX + app
        actor_class = ray.remote(num_cpus=0)(JobBoard)
        self._actor = actor_class.options(
            name=self.actor_name, get_if_exists=True, max_restarts=-1
        ).remote()
        return self._actor

    async def call(self, method: str, *args: Any) -> Any:
        target = self._target()
        if target is self._local:
            return getattr(target, method)(*args)
        try:
            return await getattr(target, method).remote(*args)
        except Exception:  # noqa: BLE001 - its owner replica died: look it up or make it anew
            logger.warning("the A1111 job board was lost; recreating it", exc_info=True)
            self._actor = None
            return await getattr(self._target(), method).remote(*args)

    def tell(self, method: str, *args: Any) -> None:
        """Fire and forget (per-step progress; the next one supersedes a lost one)."""
        target = self._target()
        if target is self._local:
            getattr(target, method)(*args)
        else:
            getattr(target, method).remote(*args)

    def control_name(self) -> str | None:
        """What the model replica looks up to ask whether a job should finish."""
        self._target()
        return self.actor_name


def control_routes(route: Any, client_of: Any, board: Board) -> list[Any]:
    """The three routes; ``route`` and ``client_of`` are ``routes/a1111.py``'s."""
    from starlette.requests import Request
    from starlette.responses import JSONResponse, Response

    from serve_app.asgi.openapi import Operation

    async def progress(request: Request) -> Response:
        skip = request.query_params.get("skip_current_image", "false").lower() == "true"
        status = await board.call("status", client_of(request), skip)
        return JSONResponse(status)

    def stopper(running_only: bool) -> Any:
        async def stop(request: Request) -> Response:
            caller = client_of(request)
            marked = await board.call("interrupt", caller, running_only)
            logger.info(
                "A1111 %s: %d job(s) end early", "skip" if running_only else "interrupt", marked
            )
            return JSONResponse(None)

        return stop

    return [
        route("/progress", progress, "GET", Operation("Progress of this client's A1111 jobs")),
        route("/interrupt", stopper(False), "POST", Operation("End this client's jobs now")),
        route("/skip", stopper(True), "POST", Operation("End this client's running jobs now")),
    ]
