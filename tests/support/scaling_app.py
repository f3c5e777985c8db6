"""The ``scaling`` app and tools to watch Serve scale it, for the autoscaling tests.

The app is serve_config.yaml's own ``args`` with fractional CPUs and short delays,
so scaling happens in seconds. Metrics are pushed every 0.5 s
(``metrics_interval_s``, which Ray 2.60 still uses as the push interval).
Tests assert on Serve's status (replica states), polled with generous bounds,
never on sleeps.
"""

from __future__ import annotations

import copy
import threading
import time
from collections import Counter
from collections.abc import Callable
from typing import Any

import httpx

SCALING_APP = "scaling"
SCALING_PREFIX = "/scaling"
MODEL = "tiny-sdxl"  # always on: autoscales 1..2 on queue depth
ON_DEMAND = "tiny-sdxl-4step"  # scales to zero
SPARE = "tiny-sdxl-4step-spare"  # test-only copy of ON_DEMAND: must stay asleep
HUGE = "tiny-sdxl-huge"  # test-only copy of ON_DEMAND asking for more CPUs than exist
HUGE_CPUS = 64
MAX_QUEUED = 4  # ON_DEMAND's max_queued_requests here

FAST = {
    "metrics_interval_s": 0.5,
    "look_back_period_s": 1.5,
    "upscale_delay_s": 0.5,
    "downscale_delay_s": 2.0,
}


def scaling_args(args: dict[str, Any], image_dir: str) -> dict[str, Any]:
    """serve_config.yaml's ``args`` with short delays and fractional CPUs."""
    args = copy.deepcopy(args)
    models = {model["id"]: model for model in args["models"]}
    always_on, on_demand = models[MODEL], models[ON_DEMAND]
    assert always_on["deployment"]["autoscaling_config"]["min_replicas"] >= 1
    assert on_demand["deployment"]["autoscaling_config"]["min_replicas"] == 0
    always_on["deployment"] = {
        "max_ongoing_requests": 64,
        "ray_actor_options": {"num_cpus": 0.1},
        "autoscaling_config": {
            **always_on["deployment"]["autoscaling_config"],
            "min_replicas": 1,
            "max_replicas": 2,
            "target_ongoing_requests": 2,
            **FAST,
        },
    }
    on_demand["deployment"] = {
        "max_ongoing_requests": 64,
        "max_queued_requests": MAX_QUEUED,
        "ray_actor_options": {"num_cpus": 0.1},
        "autoscaling_config": {
            **on_demand["deployment"]["autoscaling_config"],
            "min_replicas": 0,
            "max_replicas": 1,
            "target_ongoing_requests": 2,
            "downscale_to_zero_delay_s": 3.0,
            **FAST,
        },
    }
    spare = copy.deepcopy(on_demand)
    spare.update(id=SPARE, aliases=[])
    args["models"].append(spare)
    huge = copy.deepcopy(on_demand)
    huge.update(id=HUGE, aliases=[], cold_start_timeout_s=3.0, cold_start_retry_after_s=7)
    huge["deployment"]["ray_actor_options"] = {"num_cpus": HUGE_CPUS}
    args["models"].append(huge)
    args["encoder"]["deployment"] = {
        "max_ongoing_requests": 8,
        "ray_actor_options": {"num_cpus": 0.05},
        "autoscaling_config": {
            **args["encoder"]["deployment"]["autoscaling_config"],
            "min_replicas": 1,
            "max_replicas": 3,
            "target_ongoing_requests": 1,
            **FAST,
        },
    }
    args["ingress"]["deployment"] = {
        "num_replicas": 1,
        "max_ongoing_requests": 256,
        "ray_actor_options": {"num_cpus": 0.05},
    }
    args["storage"]["local_dir"] = image_dir
    return args


def deployment(model_id: str) -> str:
    return "Model:" + model_id


def replica_states(name: str) -> dict[str, int]:
    """Replica counts by state (RUNNING, STARTING, STOPPING...) from Serve's status."""
    from ray import serve

    overview = serve.status().applications[SCALING_APP].deployments[name]
    return {str(state): count for state, count in overview.replica_states.items() if count}


def running(name: str) -> int:
    return replica_states(name).get("RUNNING", 0)


def wait_for(condition: Callable[[], bool], timeout_s: float, what: str) -> float:
    """Poll ``condition`` until true; returns the seconds it took. Fails with Serve's
    view of the app if it never happens."""
    from ray import serve

    started = time.monotonic()
    while not condition():
        if time.monotonic() - started > timeout_s:
            status = serve.status().applications[SCALING_APP].deployments
            states = {name: dict(d.replica_states) for name, d in status.items()}
            raise AssertionError(f"timed out after {timeout_s}s waiting for {what}: {states}")
        time.sleep(0.25)
    return time.monotonic() - started


class Burst:
    """Closed-loop load: ``clients`` threads post ``body`` back to back until stopped.

    Bounded: each thread stops after ``max_s`` seconds even if never told to.
    """

    def __init__(self, base_url: str, body: dict[str, Any], clients: int, max_s: float = 300):
        self.base_url = base_url
        self.body = body
        self.max_s = max_s
        self.statuses: Counter[int] = Counter()
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._threads = [threading.Thread(target=self._run, daemon=True) for _ in range(clients)]

    def __enter__(self) -> Burst:
        for thread in self._threads:
            thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(timeout=self.max_s)

    def _run(self) -> None:
        deadline = time.monotonic() + self.max_s
        with httpx.Client(base_url=self.base_url, timeout=self.max_s) as session:
            while not self._stop.is_set() and time.monotonic() < deadline:
                status = session.post("/v1/images/generations", json=self.body).status_code
                with self._lock:
                    self.statuses[status] += 1
