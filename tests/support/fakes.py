"""Fake deployment handles for ingress unit tests (no Ray): awaitable responses, cancels."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any


class FakeResponse:
    """Awaitable like a DeploymentResponse; records cancellation."""

    def __init__(self, produce: Callable[[], Any]) -> None:
        self._produce = produce
        self.cancelled = False

    def __await__(self):  # type: ignore[no-untyped-def]
        return self._run().__await__()

    async def _run(self) -> Any:
        return await self._produce()

    def cancel(self) -> None:
        self.cancelled = True


class FakeMethod:
    def __init__(self, produce: Callable[..., Any]) -> None:
        self._produce = produce
        self.responses: list[FakeResponse] = []

    def remote(self, *args: Any) -> FakeResponse:
        async def run() -> Any:
            return await self._produce(*args)

        response = FakeResponse(run)
        self.responses.append(response)
        return response


class FakeStream:
    """A streamed ``generate_stream(job, spec)`` response over a fake ``generate``: one
    progress event per step (as the model sends when ``report_progress`` is set), then
    the final, encoded by ``encode`` as the model replica does."""

    def __init__(self, generate: Callable[..., Any], encode: Any, job: Any, spec: Any) -> None:
        self._generate = generate
        self._encode = encode
        self._job = job
        self._spec = spec
        self.cancelled = False

    async def __aiter__(self):  # type: ignore[no-untyped-def]
        from common.job import ImageEvent

        if self._job.report_progress:
            for step in range(1, self._job.steps + 1):
                yield ImageEvent("progress", None, step=step, total_steps=self._job.steps)
        pixels = await self._generate(self._job)
        images = await self._encode.remote(pixels, self._spec)
        yield ImageEvent("final", None, images=tuple(images))

    def cancel(self) -> None:
        self.cancelled = True


class _StreamMethod:
    def __init__(self, generate: Callable[..., Any], encode: Any) -> None:
        self._generate = generate
        self._encode = encode

    def remote(self, job: Any, spec: Any) -> FakeStream:
        return FakeStream(self._generate, self._encode, job, spec)


class FakeHandle:
    def __init__(self, **methods: Callable[..., Any]) -> None:
        for name, produce in methods.items():
            setattr(self, name, FakeMethod(produce))

    def options(self, **_: Any) -> FakeHandle:
        return self


def wired(models: dict[str, FakeHandle], encoder: FakeHandle) -> dict[str, FakeHandle]:
    """Model fakes whose ``generate`` gives pixels, made to answer as a model replica
    does: ``generate(job, spec)`` and ``generate_stream(job, spec)`` encode the pixels
    on ``encoder`` and return only the encoded images."""
    for handle in {id(h): h for h in models.values()}.values():  # one handle may serve two ids
        method = getattr(handle, "generate", None)
        if not isinstance(method, FakeMethod):
            continue
        pixels = method._produce

        async def generate(job: Any, spec: Any, pixels: Callable[..., Any] = pixels) -> Any:
            return await encoder.encode.remote(await pixels(job), spec)

        handle.generate = FakeMethod(generate)  # type: ignore[attr-defined]
        if "generate_stream" not in vars(handle):
            handle.generate_stream = _StreamMethod(pixels, encoder.encode)  # type: ignore[attr-defined]
    return models


async def ok() -> bool:
    return True


async def resolved(pixels: Any) -> Any:
    """What a fake encoder got: the pixels (or, from older fakes, an awaitable of them)."""
    return await pixels if hasattr(pixels, "__await__") else pixels
