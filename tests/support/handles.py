"""Calling Serve deployments from the tests' synchronous code.

The suite runs with Ray's throughput-optimized switch on, as the app ships
(``serve_app/launcher.py``). In that mode a handle's router runs on the event loop
that uses it, and a handle called from plain synchronous code (no running loop)
raises. So the tests call handles through one event loop on a daemon thread, for the
whole session, and wait for the result here. Handles are made on that loop, once per
(app, deployment): a name keeps working across redeploys of the same app.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Coroutine
from typing import Any

_lock = threading.Lock()
_loop: asyncio.AbstractEventLoop | None = None
_handles: dict[tuple[str, str], Any] = {}


def _handle_loop() -> asyncio.AbstractEventLoop:
    global _loop
    with _lock:
        if _loop is None or _loop.is_closed():
            loop = asyncio.new_event_loop()
            thread = threading.Thread(target=loop.run_forever, name="serve-handles", daemon=True)
            thread.start()
            _loop = loop
        return _loop


def _run(coro: Coroutine[Any, Any, Any], timeout_s: float) -> Any:
    return asyncio.run_coroutine_threadsafe(coro, _handle_loop()).result(timeout_s)


def _handle(app: str, deployment: str) -> Any:
    """Only called on the handle loop."""
    from ray import serve

    key = (app, deployment)
    if key not in _handles:
        _handles[key] = serve.get_deployment_handle(deployment, app)
    return _handles[key]


def call(
    app: str, deployment: str, method: str, *args: Any, timeout_s: float = 120, **kwargs: Any
) -> Any:
    """``await handle.<method>.remote(*args, **kwargs)``, from synchronous code."""

    async def remote() -> Any:
        return await getattr(_handle(app, deployment), method).remote(*args, **kwargs)

    return _run(remote(), timeout_s)


def stream(
    app: str, deployment: str, method: str, *args: Any, timeout_s: float = 120, **kwargs: Any
) -> list[Any]:
    """Every item of a streaming handle call, in order."""

    async def collect() -> list[Any]:
        handle = _handle(app, deployment).options(stream=True)
        return [item async for item in getattr(handle, method).remote(*args, **kwargs)]

    return _run(collect(), timeout_s)


def forget_handles() -> None:
    """Before ``ray.shutdown()``: drop the handles and stop their loop, so that their
    routers' background tasks (metrics pushes) do not outlive the Ray they belong to."""
    global _loop
    with _lock:
        loop, _loop = _loop, None
    if loop is None or loop.is_closed():
        return

    async def clear() -> None:
        _handles.clear()
        for task in asyncio.all_tasks():
            if task is not asyncio.current_task():
                task.cancel()

    asyncio.run_coroutine_threadsafe(clear(), loop).result(10)
    loop.call_soon_threadsafe(loop.stop)
