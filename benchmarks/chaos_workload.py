"""The chaos soak's request mix: every dialect's route, sync, streamed and async.

Each request is drawn from :data:`MIX` by a seeded RNG, so a run is repeatable. All
are tiny: 512-pixel sides on a model with ``generation_scale: 0.125`` generate 64 px,
at 2-4 steps. A client waits at most ``deadline_s`` for an answer (the app's
``ingress.request_timeout_s`` plus a margin); a request with none by then is a
**hang**. A streamed request is read to its end: a ``200`` that ends with an
``error`` event or without a ``completed`` one is counted apart from a clean ``200``.

Async jobs (``Prefer: respond-async`` on generations and edits) are followed by
:func:`follow_jobs` until they reach a terminal status; an accepted job that ends
anything but ``succeeded``, or never ends, is **lost**.
"""

from __future__ import annotations

import asyncio
import base64
import io
import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import httpx

GEN = "/v1/images/generations"
EDITS = "/v1/images/edits"
JOBS = "/v1/images/jobs"
ASYNC = {"prefer": "respond-async"}
TERMINAL = ("succeeded", "failed", "cancelled")


@dataclass
class Outcome:
    """One request as its client saw it."""

    kind: str
    status: str  # "200", "429", "200+error:<code>", "hang", an httpx error's name
    latency_s: float
    retry_after: str | None = None
    job_id: str | None = None
    sent_at_s: float = 0.0


@dataclass
class JobFate:
    """An accepted job's end as seen by polling it."""

    job_id: str
    kind: str
    status: str  # a terminal status, or "unfinished"
    attempt: int | None
    latency_s: float  # from submit to the terminal status (or to giving up)
    error_code: str | None = None


def png(size: int, seed: int) -> bytes:
    from PIL import Image

    rng = random.Random(seed)
    image = Image.new("RGB", (size, size), tuple(rng.randrange(256) for _ in range(3)))
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


Request = dict[str, Any]  # httpx.AsyncClient.request keyword arguments, plus "stream"


def openai_sync(i: int, rng: random.Random) -> Request:
    body = {"prompt": f"chaos {i % 13}", "size": "512x512", "seed": i,
            "num_inference_steps": rng.choice([2, 3, 4])}  # fmt: skip
    return {"method": "POST", "url": GEN, "json": body}


def openai_stream(i: int, rng: random.Random) -> Request:
    request = openai_sync(i, rng)
    request["json"] |= {"stream": True, "partial_images": 1}
    return {**request, "stream": True}


def openai_lora(i: int, rng: random.Random) -> Request:
    request = openai_sync(i, rng)
    request["json"]["loras"] = [{"name": f"demo-{1 + i % 4}", "scale": 0.8}]
    return request


def together_lora(i: int, rng: random.Random) -> Request:
    body = {"model": "tiny-sdxl", "prompt": f"chaos {i % 13}", "width": 512, "height": 512,
            "steps": rng.choice([2, 3, 4]), "seed": i, "n": 1,
            "image_loras": [{"path": f"demo-{1 + i % 4}", "scale": 0.6}]}  # fmt: skip
    return {
        "method": "POST",
        "url": GEN,
        "json": body,
        "headers": {"user-agent": "Together/Python"},
    }


def a1111_txt2img(i: int, rng: random.Random) -> Request:
    body = {"prompt": f"chaos {i % 13} <lora:demo-{1 + i % 4}:0.7>", "width": 512,
            "height": 512, "steps": rng.choice([2, 3, 4]), "seed": i,
            "sampler_name": "Euler a"}  # fmt: skip
    return {"method": "POST", "url": "/sdapi/v1/txt2img", "json": body}


def imagine_object(i: int, rng: random.Random) -> Request:
    # The images API takes no step count: the model's default (4 in the chaos app).
    body = {"name": f"chaos-{i}", "prompt": f"chaos {i % 13}", "size": "512x512", "seed": i}
    return {"method": "POST", "url": "/v1/images/imagine", "json": body}


def openai_edit(i: int, rng: random.Random) -> Request:
    data = {"prompt": f"chaos edit {i % 7}", "size": "512x512", "seed": str(i),
            "num_inference_steps": str(rng.choice([2, 3, 4]))}  # fmt: skip
    files = {"image": ("in.png", png(64, i), "image/png")}
    return {"method": "POST", "url": EDITS, "data": data, "files": files}


def a1111_img2img(i: int, rng: random.Random) -> Request:
    image = base64.b64encode(png(64, i)).decode()
    body = {"init_images": [image], "prompt": f"chaos img2img {i % 7}", "width": 512,
            "height": 512, "steps": rng.choice([2, 3, 4]), "seed": i,
            "denoising_strength": 0.6}  # fmt: skip
    return {"method": "POST", "url": "/sdapi/v1/img2img", "json": body}


def async_generation(i: int, rng: random.Random) -> Request:
    return {**openai_sync(i, rng), "headers": ASYNC}


def async_edit(i: int, rng: random.Random) -> Request:
    return {**openai_edit(i, rng), "headers": ASYNC}


# kind -> (weight, builder); the weights add up to 100.
MIX: dict[str, tuple[int, Callable[[int, random.Random], Request]]] = {
    "openai": (20, openai_sync),
    "openai-stream": (15, openai_stream),
    "openai-lora": (5, openai_lora),
    "together-lora": (10, together_lora),
    "imagine": (5, imagine_object),
    "edit": (10, openai_edit),
    "a1111-txt2img-lora": (8, a1111_txt2img),
    "a1111-img2img": (7, a1111_img2img),
    "async": (15, async_generation),
    "async-edit": (5, async_edit),
}


def draw(rng: random.Random) -> str:
    kinds = list(MIX)
    return rng.choices(kinds, weights=[MIX[k][0] for k in kinds])[0]


async def send(
    client: httpx.AsyncClient, kind: str, request: Request, deadline_s: float
) -> Outcome:
    """Send one request and wait for its whole answer, at most ``deadline_s``."""
    started = time.monotonic()
    stream = request.pop("stream", False)

    def done(
        status: str, response: httpx.Response | None = None, job: str | None = None
    ) -> Outcome:
        retry = None if response is None else response.headers.get("retry-after")
        return Outcome(kind, status, time.monotonic() - started, retry, job, started)

    try:
        async with asyncio.timeout(deadline_s):
            if stream:
                async with client.stream(**request) as response:
                    text = (await response.aread()).decode(errors="replace")
                return done(_stream_status(response.status_code, text), response)
            response = await client.request(**request)
    except TimeoutError:
        return done("hang")
    except httpx.HTTPError as exc:
        return done(type(exc).__name__)
    job_id = response.json().get("id") if response.status_code == 202 else None
    return done(str(response.status_code), response, job_id)


def _stream_status(status: int, text: str) -> str:
    if status != 200:
        return str(status)
    if "event: error" in text:
        code = text.split('"code":"', 1)[1].split('"', 1)[0] if '"code":"' in text else "?"
        return f"200+error:{code}"
    return "200" if ".completed" in text else "200+truncated"


@dataclass
class Traffic:
    """The load's shared state: what was sent, what came back, the jobs accepted."""

    total: int
    concurrency: int
    deadline_s: float
    seed: int
    outcomes: list[Outcome] = field(default_factory=list)
    sent: int = 0

    async def run(self, url: str) -> None:
        rng = random.Random(self.seed)
        plan = [(i, draw(rng)) for i in range(self.total)]
        limits = httpx.Limits(max_connections=None)
        timeout = httpx.Timeout(self.deadline_s + 30)
        async with httpx.AsyncClient(base_url=url, timeout=timeout, limits=limits) as client:

            async def worker() -> None:
                while plan:
                    i, kind = plan.pop(0)
                    self.sent += 1
                    request = MIX[kind][1](i, random.Random(i))
                    self.outcomes.append(await send(client, kind, request, self.deadline_s))

            await asyncio.gather(*(worker() for _ in range(self.concurrency)))


async def follow_jobs(url: str, outcomes: list[Outcome], give_up_s: float) -> list[JobFate]:
    """Poll every accepted job until it ends, or ``give_up_s`` from now."""
    submitted = {o.job_id: o for o in outcomes if o.job_id is not None}
    fates: dict[str, JobFate] = {}
    deadline = time.monotonic() + give_up_s
    async with httpx.AsyncClient(base_url=url, timeout=60) as client:
        while len(fates) < len(submitted) and time.monotonic() < deadline:
            for job_id, outcome in submitted.items():
                if job_id in fates:
                    continue
                try:
                    response = await client.get(f"{JOBS}/{job_id}")
                except httpx.HTTPError:
                    continue
                job = response.json() if response.status_code == 200 else {}
                if job.get("status") in TERMINAL:
                    fates[job_id] = _fate(outcome, job)
            await asyncio.sleep(2.0)
    for job_id, outcome in submitted.items():
        fates.setdefault(job_id, _fate(outcome, {"status": "unfinished"}))
    return list(fates.values())


def _fate(outcome: Outcome, job: dict[str, Any]) -> JobFate:
    finished = job.get("finished_at")
    created = job.get("created_at")
    took = (
        float(finished - created) if finished and created else time.monotonic() - outcome.sent_at_s
    )
    error = job.get("error") or {}
    return JobFate(
        outcome.job_id or "",
        outcome.kind,
        job["status"],
        job.get("attempt"),
        took,
        error.get("code"),
    )
