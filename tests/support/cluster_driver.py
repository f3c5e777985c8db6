"""A three-node Ray cluster on this machine, driven over stdin/stdout by a test.

``python -m tests.support.cluster_driver <s3 endpoint> <bucket>`` starts
``ray.cluster_utils.Cluster`` (a head and two workers, each node its own raylet, in
its own temp dir so nothing else on the machine can join it), Serve's proxy on the
head only, and two apps on the S3 store (moto_server):

- ``imagegen-mn`` at ``/``: the ingress and the encoder on the head (custom resource
  ``head``), two model replicas, one per worker (``model_slot``, one per worker);
- ``imagegen-mn-b`` at ``/b``: an ingress on worker B (``worker_b``) over the same
  bucket, with no model replica of its own: it reads what the first app wrote.

It prints one line (``cluster-driver: <json>``) when ready (``{"port": ...}``), then
answers one such line per command read from stdin: ``remove <name>`` (a worker node
goes, without a graceful drain), ``local`` (``build_app`` with ``storage.kind:
local``: the error it raises), ``quit``. It runs in its own process because a
pytest process may already hold another Ray (the session's ``ray.init``), and one
process can be connected to only one cluster.
"""

from __future__ import annotations

import copy
import json
import os
import shutil
import sys
import tempfile
from typing import Any

from tests.integration.conftest import TEST_SIGNING_KEY, TEST_WEBHOOK_SECRET, free_port, s3_app_args

APP, APP_B = "imagegen-mn", "imagegen-mn-b"
WORKERS = {"worker_a": 1.0, "worker_b": 1.0}
REQUEST_TIMEOUT_S = 60.0
# The GCS declares a node dead after failure_threshold missed checks, period_ms apart
# (Ray's defaults: 5 x 3 s). Requests held by a dead node's replica fail only then.
HEALTH_CHECKS = {"health_check_period_ms": 1000, "health_check_failure_threshold": 3}


def placed(deployment: dict[str, Any], resource: str, **options: Any) -> dict[str, Any]:
    actor = {"num_cpus": 0.05, "resources": {resource: 0.01}}
    return {**deployment, **options, "ray_actor_options": actor}


def app_args(endpoint: str, bucket: str) -> dict[str, Any]:
    args = s3_app_args(endpoint, bucket)
    # Results outlive the test (a job's record expires url_ttl_s after it finishes).
    args["storage"].update(prefix="multinode/", url_ttl_s=600)
    args["ingress"]["request_timeout_s"] = REQUEST_TIMEOUT_S
    model = args["models"][0]
    model["deployment"] = {
        "num_replicas": 2,
        "max_ongoing_requests": 16,
        "max_queued_requests": 16,
        "graceful_shutdown_timeout_s": 1,
        "ray_actor_options": {"num_cpus": 0.1, "resources": {"model_slot": 1}},
    }
    args["encoder"]["deployment"] = placed(args["encoder"]["deployment"], "head")
    args["ingress"]["deployment"] = placed(args["ingress"]["deployment"], "head")
    return args


def reader_args(args: dict[str, Any]) -> dict[str, Any]:
    """The second app: its ingress on worker B, no model replica of its own."""
    reader = copy.deepcopy(args)
    reader["models"][0]["deployment"] = {
        "autoscaling_config": {"min_replicas": 0, "max_replicas": 1, "initial_replicas": 0},
        "ray_actor_options": {"num_cpus": 0.1, "resources": {"model_slot": 1}},
    }
    reader["ingress"]["deployment"] = placed(args["ingress"]["deployment"], "worker_b")
    return reader


def main(endpoint: str, bucket: str) -> None:
    from serve_app.launcher import private_haproxy_ports

    # This cluster's HAProxy runs beside the session's (inherited ports): its own ones.
    private_haproxy_ports()
    import ray
    from ray import serve
    from ray.cluster_utils import Cluster

    from serve_app.app import SIGNING_KEY_ENV, build_app
    from tests.integration.conftest import WEBHOOK_SECRET_ENV

    os.environ[SIGNING_KEY_ENV] = TEST_SIGNING_KEY
    os.environ[WEBHOOK_SECRET_ENV] = TEST_WEBHOOK_SECRET
    temp_dir = tempfile.mkdtemp(prefix="ray-mn-", dir="/tmp")
    # Cluster records its address in $RAY_TMPDIR/ray/ray_current_cluster, where a bare
    # ray.init() elsewhere on the machine would find and join it: keep it private.
    os.environ["RAY_TMPDIR"] = temp_dir
    os.makedirs(os.path.join(temp_dir, "ray"))
    common = {"temp_dir": temp_dir, "include_dashboard": False}
    cluster = Cluster(
        initialize_head=True,
        head_node_args={
            **common,
            "num_cpus": 2,
            "resources": {"head": 1.0},
            "_system_config": HEALTH_CHECKS,
        },
    )
    workers = {
        name: cluster.add_node(**common, num_cpus=1, resources={"model_slot": 1.0, name: 1.0})
        for name in WORKERS
    }
    cluster.wait_for_nodes()
    ray.init(address=cluster.address, log_to_driver=False)
    try:
        port = free_port()
        serve.start(http_options={"host": "127.0.0.1", "port": port, "location": "HeadOnly"})
        args = app_args(endpoint, bucket)
        serve.run(build_app(args), name=APP, route_prefix="/")
        serve.run(build_app(reader_args(args)), name=APP_B, route_prefix="/b")
        reply({"port": port})
        for line in sys.stdin:
            command, *rest = line.split()
            if command == "remove":
                cluster.remove_node(workers.pop(rest[0]), allow_graceful=False)
                reply({"removed": rest[0]})
            elif command == "local":
                local = {**args, "storage": {"kind": "local", "local_dir": temp_dir}}
                try:
                    build_app(local)
                    reply({"error": None})
                except ValueError as exc:
                    reply({"error": str(exc)})
            elif command == "quit":
                break
    finally:
        ray.shutdown()
        cluster.shutdown()
        if not os.environ.get("IMAGEGEN_KEEP_RAY_LOGS"):
            shutil.rmtree(temp_dir, ignore_errors=True)


PREFIX = "cluster-driver: "


def reply(message: dict[str, Any]) -> None:
    """One protocol line; anything else on stdout (Ray's own output) is not prefixed."""
    print(PREFIX + json.dumps(message), flush=True)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
