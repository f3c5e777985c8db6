"""Cluster-wide admission for async jobs: ``jobs.max_queued`` for the whole app.

Every ingress replica asks one ledger before it accepts a job. In a Serve app the
ledger is a named, detached Ray actor per application (``imagegen-jobs:<app>``,
restarted by Ray if its node goes, placed on the head node when it can be), so the
limit holds across replicas; outside Ray (unit tests) it is an in-process
:class:`Ledger`.

No stale count: an entry is a lease, not a counter. It lapses ``lease_s`` after it
was last renewed, and the replica holding a job renews all of its jobs at every
heartbeat (a replica that takes a job over renews it from then on). So a crashed
replica's jobs leave the count when their leases run out, a restarted ledger
fills up again within one heartbeat, and a job that finishes leaves at once.

A ledger that cannot be reached admits: refusing work because bookkeeping failed
would turn a degraded count into lost requests.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any, Protocol

logger = logging.getLogger("imagegen.jobs")

LEDGER_TIMEOUT_S = 5.0
ACTOR_PREFIX = "imagegen-jobs:"


class Ledger:
    """Job ids with lease expiries; the count is the live ones."""

    def __init__(self) -> None:
        self.leases: dict[str, float] = {}

    def _live(self, now: float) -> int:
        for job_id in [j for j, until in self.leases.items() if until < now]:
            del self.leases[job_id]
        return len(self.leases)

    def admit(self, job_id: str, limit: int, lease_s: float) -> int | None:
        """Hold a place for ``job_id``; -> ``None`` if admitted, else the live count."""
        now = time.time()
        count = self._live(now)
        if job_id not in self.leases and count >= limit:
            return count
        self.leases[job_id] = now + lease_s
        return None

    def renew(self, job_ids: list[str], lease_s: float) -> None:
        until = time.time() + lease_s
        for job_id in job_ids:
            self.leases[job_id] = until

    def release(self, job_id: str) -> None:
        self.leases.pop(job_id, None)

    def count(self) -> int:
        return self._live(time.time())


class Admission(Protocol):
    async def admit(self, job_id: str, limit: int, lease_s: float) -> int | None: ...

    async def renew(self, job_ids: list[str], lease_s: float) -> None: ...

    async def release(self, job_id: str) -> None: ...


class LocalAdmission:
    """One process's ledger (no Ray): the limit holds per process."""

    def __init__(self) -> None:
        self.ledger = Ledger()

    async def admit(self, job_id: str, limit: int, lease_s: float) -> int | None:
        return self.ledger.admit(job_id, limit, lease_s)

    async def renew(self, job_ids: list[str], lease_s: float) -> None:
        self.ledger.renew(job_ids, lease_s)

    async def release(self, job_id: str) -> None:
        self.ledger.release(job_id)


class RayAdmission:
    """The app's ledger actor, created by whichever replica asks first."""

    def __init__(self, app_name: str) -> None:
        self.name = ACTOR_PREFIX + app_name
        self._actor: Any = None

    def _get(self) -> Any:
        if self._actor is None:
            import ray

            remote = ray.remote(Ledger).options(
                name=self.name,
                namespace="serve",
                lifetime="detached",
                get_if_exists=True,
                num_cpus=0,
                max_restarts=-1,
                max_task_retries=-1,
                scheduling_strategy=_head_node_strategy(),
            )
            self._actor = remote.remote()
        return self._actor

    async def _call(self, method: str, *args: Any) -> Any:
        try:
            async with asyncio.timeout(LEDGER_TIMEOUT_S):
                return await getattr(self._get(), method).remote(*args)
        except Exception:  # noqa: BLE001 - see the module docstring: admit, log
            logger.warning("job ledger %s: %s failed", self.name, method, exc_info=True)
            self._actor = None
            return None

    async def admit(self, job_id: str, limit: int, lease_s: float) -> int | None:
        return await self._call("admit", job_id, limit, lease_s)

    async def renew(self, job_ids: list[str], lease_s: float) -> None:
        await self._call("renew", job_ids, lease_s)

    async def release(self, job_id: str) -> None:
        await self._call("release", job_id)


def _head_node_strategy() -> Any:
    """Soft affinity to the head node, which lives as long as the cluster does."""
    import ray
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    for node in ray.nodes():
        if node.get("Alive") and "node:__internal_head__" in node.get("Resources", {}):
            return NodeAffinitySchedulingStrategy(node["NodeID"], soft=True)
    return "DEFAULT"


def admission_for_replica() -> Admission:
    """The app's shared ledger inside a Serve replica; a local one anywhere else."""
    try:
        from ray import serve

        app_name = serve.get_replica_context().app_name
    except Exception:  # noqa: BLE001 - not in a replica (unit tests, scripts)
        return LocalAdmission()
    return RayAdmission(app_name)
