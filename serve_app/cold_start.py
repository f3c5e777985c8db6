"""A request to a model with no running replica waits for one, but not forever.

Serve queues requests for a deployment that has no replica and starts one. When
the cluster cannot place that replica (it asks for more CPUs, GPUs or custom
resources than any node has free), the request would wait until the ingress's
deadline and end as a 504 that says nothing. Instead, while a cold model's request
runs, a watcher polls the replica count; if none is running after the model's
``cold_start_timeout_s``, the request is cancelled and answered 503 with
``Retry-After`` and a message naming what the replica asks for and what the
cluster has free.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

from common.errors import APIError
from common.model_config import ModelConfig

logger = logging.getLogger("imagegen.ingress")

T = TypeVar("T")
POLL_S = 1.0

ReplicaCounter = Callable[[ModelConfig], Awaitable[int]]


def required_resources(model: ModelConfig) -> dict[str, float]:
    """What one replica of ``model`` asks Ray for (Serve's default is 1 CPU)."""
    options: dict[str, Any] = dict(model.deployment.ray_actor_options or {})
    wanted: dict[str, float] = {"CPU": float(options.get("num_cpus", 1))}
    if options.get("num_gpus"):
        wanted["GPU"] = float(options["num_gpus"])
    if options.get("memory"):
        wanted["memory"] = float(options["memory"])
    for name, amount in (options.get("resources") or {}).items():
        wanted[str(name)] = float(amount)
    return wanted


def free_resources() -> dict[str, float]:
    """The cluster's free resources now (``ray.available_resources``)."""
    import ray

    return {
        key: value
        for key, value in ray.available_resources().items()
        if not key.startswith(("node:", "object_store_memory"))
    }


def unschedulable(model: ModelConfig, waited_s: float, free: dict[str, float]) -> APIError:
    wanted = required_resources(model)
    missing = {k: v for k, v in wanted.items() if free.get(k, 0.0) < v}
    shown = ", ".join(f"{k}={v:g}" for k, v in sorted(wanted.items()))
    short = ", ".join(f"{k} (needs {v:g}, {free.get(k, 0.0):g} free)" for k, v in missing.items())
    return APIError(
        "unavailable",
        f"The model '{model.id}' has no running replica after {waited_s:.0f} s: its replica "
        f"asks for {shown} and the cluster cannot place it"
        + (f"; short of {short}" if short else "")
        + ". Add nodes with those resources or lower the model's "
        "deployment.ray_actor_options.",
        code="model_unschedulable",
        headers={"retry-after": str(model.cold_start_retry_after_s)},
    )


async def guard_cold_start(
    model: ModelConfig,
    work: Awaitable[T],
    count_replicas: ReplicaCounter,
    free: Callable[[], dict[str, float]] = free_resources,
) -> T:
    """Await ``work``; if no replica of ``model`` runs within its cold-start timeout,
    cancel ``work`` and raise the 503. Call only when the model was cold."""
    task = asyncio.ensure_future(work)
    waited = 0.0
    try:
        while waited < model.cold_start_timeout_s:
            done, _ = await asyncio.wait({task}, timeout=POLL_S)
            if done:
                return task.result()
            waited += POLL_S
            try:
                if await count_replicas(model) > 0:
                    return await task  # started: the request's own deadline applies
            except Exception:  # noqa: BLE001 - keep waiting, the deadline still holds
                logger.warning("could not count replicas of %s", model.id, exc_info=True)
        task.cancel()
        available = await asyncio.to_thread(free)
        logger.warning("model %s unschedulable after %.0f s", model.id, waited)
        raise unschedulable(model, waited, available)
    except BaseException:
        task.cancel()
        raise
