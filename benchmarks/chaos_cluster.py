"""The chaos soak's own cluster: moto_server as S3, a 3-node Ray cluster, the app.

``ray.cluster_utils.Cluster`` runs a head and two worker nodes on this machine, each
its own raylet, all in a private temp dir (nothing else on the machine can join it,
and nothing of it outlives :func:`chaos_cluster`). The placement mirrors the KubeRay
manifest's intent with custom resources:

- head (resource ``head``): the Serve controller, the proxy (``HeadOnly``), two
  ingress replicas and two encoder replicas;
- ``worker_a`` and ``worker_b`` (resource ``model_slot``: 1 each): one model
  replica each, so removing a worker takes a model replica with it.

The store is S3 (a ``moto_server`` process on loopback), as the app requires on
more than one node. Faults are done here too: :meth:`ChaosCluster.kill_replica`
(``ray.kill`` of one replica actor of a deployment, found by name in the ``serve``
namespace) and :meth:`ChaosCluster.remove_worker` (a node goes without a drain).
"""

from __future__ import annotations

import copy
import os
import secrets
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import yaml

ROOT = Path(__file__).resolve().parents[1]
APP = "chaos"
BUCKET = "imagegen-chaos"
WORKERS = ("worker_a", "worker_b")
# Node death is declared after 3 missed health checks 1 s apart (Ray's default: 5 x 3 s).
HEALTH_CHECKS = {"health_check_period_ms": 1000, "health_check_failure_threshold": 3}
# Credentials that open only this run's moto_server; replicas inherit them.
MOTO_ENV = {
    "AWS_ACCESS_KEY_ID": "chaos-key",
    "AWS_SECRET_ACCESS_KEY": "chaos-secret",
    "AWS_DEFAULT_REGION": "us-east-1",
    "AWS_EC2_METADATA_DISABLED": "true",
}
# Leases short enough that a takeover happens within the run (the shipped 30 s / 5 s
# would work too, only slower).
JOBS = {"lease_s": 10.0, "heartbeat_s": 1.0, "sweep_interval_s": 5.0, "max_attempts": 3}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@contextmanager
def moto_s3(log_dir: str) -> Iterator[str]:
    """A moto_server on a free loopback port with the bucket made; yields its endpoint."""
    import boto3

    beside = Path(sys.executable).parent / "moto_server"
    command = str(beside) if beside.exists() else shutil.which("moto_server")
    if command is None:
        raise SystemExit("moto_server is not installed: pip install 'moto[server]'")
    port = free_port()
    with open(os.path.join(log_dir, "moto.log"), "ab") as log:
        process = subprocess.Popen(
            [command, "-H", "127.0.0.1", "-p", str(port)],
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
        )
    endpoint = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                httpx.get(endpoint, timeout=2)
                break
            except httpx.TransportError:
                if time.monotonic() > deadline or process.poll() is not None:
                    raise SystemExit("moto_server did not start") from None
                time.sleep(0.2)
        boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1").create_bucket(
            Bucket=BUCKET
        )
        yield endpoint
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=10)


def app_args(endpoint: str, request_timeout_s: float) -> dict[str, Any]:
    """serve_config.yaml's args for this cluster: the first model only, placed as above."""
    doc = yaml.safe_load((ROOT / "serve_config.yaml").read_text())
    args = copy.deepcopy(doc["applications"][0]["args"])
    model = args["models"][0]
    args["models"], args["default_model"] = [model], model["id"]
    # Few steps for every request, also those that cannot name a step count (the
    # imagine images API): at the shipped 20, the first run's imagine requests needed
    # more than the 60 s deadline on the loaded machine (benchmarks/results/chaos.md).
    model["default_steps"] = 4
    model["deployment"] = {
        "num_replicas": 2,
        "max_ongoing_requests": 32,
        "max_queued_requests": 32,
        "graceful_shutdown_timeout_s": 1,
        "ray_actor_options": {"num_cpus": 0.1, "resources": {"model_slot": 1}},
    }
    on_head = {"num_cpus": 0.05, "resources": {"head": 0.01}}
    args["encoder"]["deployment"] = {
        "num_replicas": 2,
        "max_ongoing_requests": 32,
        "ray_actor_options": on_head,
    }
    args["ingress"]["deployment"] = {
        "num_replicas": 2,
        "max_ongoing_requests": 256,
        "ray_actor_options": on_head,
    }
    args["ingress"]["request_timeout_s"] = request_timeout_s
    args["jobs"] = {**args.get("jobs", {}), **JOBS}
    args["storage"] = {
        "kind": "s3",
        "bucket": BUCKET,
        "prefix": "chaos/",
        "endpoint_url": endpoint,
        "region": "us-east-1",
        "addressing_style": "path",
        "url_ttl_s": 3600,
    }
    return args


@dataclass
class ChaosCluster:
    """The running cluster: its proxy URL and the worker nodes still in it."""

    cluster: Any
    workers: dict[str, Any]
    url: str
    temp_dir: str
    faults: list[dict[str, Any]] = field(default_factory=list)

    def replicas(self, deployment: str) -> list[dict[str, Any]]:
        """This app's live replica actors of ``deployment``: name, pid, node."""
        import ray

        found = []
        for entry in ray.util.list_named_actors(all_namespaces=True):
            name = entry["name"]
            if entry.get("namespace") != "serve" or f"{APP}#{deployment}#" not in name:
                continue
            actor = ray.get_actor(name, namespace="serve")
            try:
                pid, node = ray.get(actor.__ray_call__.remote(_where), timeout=30)
            except Exception:  # noqa: BLE001 - a replica already going: not a target
                continue
            found.append({"name": name, "pid": pid, "node": self.node_name(node)})
        return found

    def node_name(self, node_id: str) -> str:
        for name, node in self.workers.items():
            if node.node_id == node_id:
                return name
        return "head" if self.cluster.head_node.node_id == node_id else node_id[:8]

    def kill_replica(self, deployment: str, on_node: str | None = None) -> dict[str, Any]:
        """``ray.kill`` one replica of ``deployment`` (on ``on_node`` when it has one)."""
        import ray

        replicas = self.replicas(deployment)
        if not replicas:
            return self._record({"fault": f"kill {deployment}", "error": "no live replica"})
        chosen = next((r for r in replicas if r["node"] == on_node), replicas[0])
        ray.kill(ray.get_actor(chosen["name"], namespace="serve"), no_restart=True)
        return self._record({"fault": f"kill {deployment}", **chosen})

    def remove_worker(self, name: str) -> dict[str, Any]:
        """The worker node ``name`` goes at once (no graceful drain); the record says
        which replicas were on it and whether their processes were still alive 10 s
        later (a diagnostic: the calls they held fail only when they are gone)."""
        import psutil

        on_it = [r for d in ("Model:tiny-sdxl", "Encoder", "Ingress") for r in self.replicas(d)]
        on_it = [r for r in on_it if r["node"] == name]
        node = self.workers.pop(name)
        self.cluster.remove_node(node, allow_graceful=False)
        record = self._record({"fault": f"remove {name}", "node": name, "replicas": on_it})
        time.sleep(10)
        record["alive_after_10s"] = [r["pid"] for r in on_it if psutil.pid_exists(r["pid"])]
        return record

    def _record(self, fault: dict[str, Any]) -> dict[str, Any]:
        fault["at_s"] = round(time.monotonic(), 2)
        self.faults.append(fault)
        return fault


def _where(_self: Any) -> tuple[int, str]:
    import ray

    return os.getpid(), ray.get_runtime_context().get_node_id()


@contextmanager
def chaos_cluster(port: int, request_timeout_s: float) -> Iterator[ChaosCluster]:
    """Moto, the 3-node cluster and the app; everything is stopped and removed after."""
    from serve_app.launcher import apply_defaults, private_haproxy_ports

    apply_defaults()  # the serving path as the app ships it
    private_haproxy_ports()
    import ray
    from ray import serve
    from ray.cluster_utils import Cluster

    from serve_app.app import SIGNING_KEY_ENV, build_app

    temp_dir = tempfile.mkdtemp(prefix="ray-chaos-", dir="/tmp")
    # Cluster records its address under $RAY_TMPDIR; keep it private to this run.
    os.environ["RAY_TMPDIR"] = temp_dir
    os.makedirs(os.path.join(temp_dir, "ray"))
    os.environ.update(MOTO_ENV)
    os.environ.setdefault(SIGNING_KEY_ENV, secrets.token_hex(32))
    os.environ.setdefault("IMAGEGEN_CACHE", os.path.join(temp_dir, "cache"))
    for name in ("IMAGEGEN_API_KEYS", "IMAGEGEN_A1111_AUTH", "AWS_PROFILE", "AWS_ENDPOINT_URL"):
        os.environ.pop(name, None)
    common = {"temp_dir": temp_dir, "include_dashboard": False}
    with moto_s3(temp_dir) as endpoint:
        cluster = Cluster(
            initialize_head=True,
            head_node_args={
                **common,
                "num_cpus": 2,
                "resources": {"head": 1.0},
                "_system_config": HEALTH_CHECKS,
            },
        )
        try:
            workers = {
                name: cluster.add_node(**common, num_cpus=1, resources={"model_slot": 1.0})
                for name in WORKERS
            }
            cluster.wait_for_nodes()
            ray.init(address=cluster.address, log_to_driver=False)
            serve.start(http_options={"host": "127.0.0.1", "port": port, "location": "HeadOnly"})
            serve.run(build_app(app_args(endpoint, request_timeout_s)), name=APP, route_prefix="/")
            yield ChaosCluster(cluster, workers, f"http://127.0.0.1:{port}", temp_dir)
        finally:
            ray.shutdown()
            cluster.shutdown()
            if not os.environ.get("IMAGEGEN_KEEP_RAY_LOGS"):
                shutil.rmtree(temp_dir, ignore_errors=True)
