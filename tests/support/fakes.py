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


class FakeHandle:
    def __init__(self, **methods: Callable[..., Any]) -> None:
        for name, produce in methods.items():
            setattr(self, name, FakeMethod(produce))


async def ok() -> bool:
    return True
