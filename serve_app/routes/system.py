"""``GET /health`` (liveness), ``GET /ready`` (readiness), ``GET /v1/stats`` (batch counters)."""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute

from serve_app.asgi.endpoints import api_endpoint
from serve_app.asgi.openapi import ApiRoute, Operation

if TYPE_CHECKING:
    from serve_app.ingress import Ingress

READY_TIMEOUT_S = 5.0


def routes(ingress: Ingress) -> list[BaseRoute]:
    async def health(request: Request) -> Response:
        """Liveness: the ingress answers. Never touches the models."""
        return JSONResponse({"status": "ok"})

    async def ready(request: Request) -> Response:
        """Readiness: the encoder and every always-on model answer within a deadline.

        A model that scales to zero is reported as ``on_demand`` and not called:
        a probe would wake it and keep it from ever scaling down.
        """
        on_demand = {f"model:{m.id}" for m in ingress.args.models if m.deployment.scales_to_zero()}
        handles = {
            "encoder": ingress.encoder,
            **{f"model:{k}": v for k, v in ingress.models.items() if f"model:{k}" not in on_demand},
        }

        async def check(handle: object) -> str:
            try:
                await asyncio.wait_for(_call_ready(handle), timeout=READY_TIMEOUT_S)
                return "ready"
            except Exception:  # noqa: BLE001 - reported per deployment
                return "unavailable"

        results = await asyncio.gather(*(check(h) for h in handles.values()))
        status = dict(zip(handles, results, strict=True))
        ok = all(value == "ready" for value in status.values())
        status |= dict.fromkeys(sorted(on_demand), "on_demand")
        return JSONResponse(
            {"status": "ready" if ok else "not_ready", "deployments": status},
            status_code=200 if ok else 503,
        )

    async def stats(request: Request) -> Response:
        """Batch counters of each model deployment (one replica's view per model).

        For benchmarks and operators: how large batches really are. With several
        replicas a call reaches one of them; Serve's own metrics cover the rest.
        Models that scale to zero report ``on_demand``: asking would wake them.
        """
        awake = [m.id for m in ingress.args.models if not m.deployment.scales_to_zero()]
        results = await asyncio.gather(*(_call(ingress.models[m], "stats") for m in awake))
        report: dict[str, object] = dict.fromkeys(ingress.models, "on_demand")
        report.update(zip(awake, results, strict=True))
        return JSONResponse({"models": report})

    return [
        ApiRoute("/health", health, "GET", Operation("Liveness: the ingress answers")),
        ApiRoute(
            "/ready",
            api_endpoint(ready),
            "GET",
            Operation("Readiness: the encoder and every always-on model answer"),
        ),
        ApiRoute(
            "/v1/stats",
            api_endpoint(stats),
            "GET",
            Operation("Batch counters of each model deployment"),
        ),
    ]


async def _call_ready(handle: object) -> object:
    return await _call(handle, "ready")


async def _call(handle: object, method: str) -> object:
    return await getattr(handle, method).remote()
