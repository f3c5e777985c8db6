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
    """A streamed ``generate_stream`` response over a fake ``generate``: one progress
    event per step (as the model sends when ``report_progress`` is set), then the final."""

    def __init__(self, generate: Callable[..., Any], job: Any) -> None:
        self._generate = generate
        self._job = job
        self.cancelled = False

    async def __aiter__(self):  # type: ignore[no-untyped-def]
        from common.job import ImageEvent

        if self._job.report_progress:
            for step in range(1, self._job.steps + 1):
                yield ImageEvent("progress", None, step=step, total_steps=self._job.steps)
        yield ImageEvent("final", await self._generate(self._job))

    def cancel(self) -> None:
        self.cancelled = True


class _StreamMethod:
    def __init__(self, generate: Callable[..., Any]) -> None:
        self._generate = generate

    def remote(self, job: Any) -> FakeStream:
        return FakeStream(self._generate, job)


class FakeHandle:
    def __init__(self, **methods: Callable[..., Any]) -> None:
        for name, produce in methods.items():
            setattr(self, name, FakeMethod(produce))
        if "generate" in methods and "generate_stream" not in methods:
            self.generate_stream = _StreamMethod(methods["generate"])

    def options(self, **_: Any) -> FakeHandle:
        return self


async def ok() -> bool:
    return True


async def resolved(pixels: Any) -> Any:
    """What a fake encoder got: the model's response (plain requests) or the pixels
    themselves (the streamed path, which A1111 requests take for their progress)."""
    return await pixels if hasattr(pixels, "__await__") else pixels
