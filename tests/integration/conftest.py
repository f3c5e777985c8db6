"""Real Ray Serve apps on the tiny model, shared by the integration tier.

Ray runs in an isolated temp dir with ``address="local"`` (never joining another
cluster on the machine) and is torn down with ``ray.shutdown()``, never ``ray stop``.
Deployments take fractional CPUs so everything fits on 2 cores.

Apps share the one Ray instance: ``imagegen`` at ``/`` with fixed replica counts
and a local image folder (most tests); ``scaling`` at ``/scaling``, deployed only
when a test asks for it, with autoscaling on short delays (autoscaling and
scale-to-zero tests); ``imagegen-hardened`` at ``/hardened`` (see
``tests/integration/hardened.py``: API keys on, a tiny model queue for the load
test, CORS on, cheap limits for schemathesis); and ``imagegen-s3`` at ``/s3``,
also on demand, the same ``build_app`` with ``storage.kind: s3`` pointed at the
suite's moto_server (its replicas get the S3 credentials from the environment they
inherit, as pods get them from a secret).
"""

from __future__ import annotations

import base64
import copy
import os
import shutil
import socket
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest
import yaml

from common.config import WebhookConfig
from serve_app.app import SIGNING_KEY_ENV
from tests.support import handles

WEBHOOK_SECRET_ENV = WebhookConfig().secret_env or "IMAGEGEN_WEBHOOK_SECRET"

ROOT = Path(__file__).resolve().parents[2]
APP_NAME = "imagegen"
S3_APP_NAME = "imagegen-s3"
S3_ROUTE_PREFIX = "/s3"
S3_URL_TTL_S = 45
MODEL_DEPLOYMENT = "Model:tiny-sdxl"
# Ray's Prometheus endpoint for this session, set when Ray starts.
RAY_PORTS: dict[str, int] = {}
# Known to the tests so they can mint URLs (e.g. validly signed but expired ones).
TEST_SIGNING_KEY = "integration-signing-key-0123456789"
# image_url tests serve images from this loopback address, the only one the test app's
# fetch allowlist names: 127.0.0.1 stays refused like any private address.
IMAGE_SERVER_HOST = "127.0.0.2"
# A small upload limit, so the 413 test need not send 50 MB.
TEST_UPLOAD_LIMIT = 4 << 20
# Job webhooks are signed with this Standard Webhooks secret (from the environment,
# as from a Kubernetes secret); leases and retries are short so lease expiry and
# retry tests take seconds.
TEST_WEBHOOK_SECRET = "whsec_" + base64.b64encode(b"integration-webhook-secret-0123").decode()
TEST_JOBS = {
    "lease_s": 10.0,  # 20 heartbeats: 3 s lost a running job to a starved ingress on 2 cores
    "heartbeat_s": 0.5,
    "sweep_interval_s": 2.0,
    "webhooks": {"initial_backoff_s": 0.2, "max_backoff_s": 1.0, "max_total_s": 30.0},
}
# The A1111 routes run with Basic auth on, read from a secret file as in production.
A1111_USER, A1111_PASSWORD = "webui", "s3cret-pass"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def serve_config_args() -> dict[str, Any]:
    """A copy of serve_config.yaml's ``args``: tests start from what ships."""
    doc = yaml.safe_load((ROOT / "serve_config.yaml").read_text())
    return copy.deepcopy(doc["applications"][0]["args"])


def app_args_for_tests(image_dir: str | None, auth_file: str | None = None) -> dict[str, Any]:
    """serve_config.yaml's own args, resized for a 2-core test machine."""
    args = serve_config_args()
    first, *others = args["models"]
    # Long requests (200 steps) let streaming tests cancel one mid-flight.
    first["max_steps"] = 200
    first["deployment"] = {
        "num_replicas": 1,
        "max_ongoing_requests": 64,
        "ray_actor_options": {"num_cpus": 0.5},
    }
    # They cost nothing until used. Woken, each reserves 0.05 CPU and goes back to zero
    # 20 s after its last request, so the suite's other apps (hardened, scaling, S3, the
    # S3 jobs app) still find room in its 2-CPU Ray.
    for model in others:
        model["deployment"]["ray_actor_options"] = {"num_cpus": 0.05}
        model["deployment"]["autoscaling_config"].update(
            downscale_delay_s=20, downscale_to_zero_delay_s=20
        )
    args["encoder"]["deployment"] = {"num_replicas": 1, "ray_actor_options": {"num_cpus": 0.25}}
    args["ingress"]["deployment"] = {
        "num_replicas": 1,
        "max_ongoing_requests": 256,
        "ray_actor_options": {"num_cpus": 0.25},
    }
    args["images"] = {
        **args.get("images", {}),
        "fetch_allowlist": [IMAGE_SERVER_HOST],
        "max_upload_bytes": TEST_UPLOAD_LIMIT,
    }
    args["jobs"] = copy.deepcopy(TEST_JOBS)
    if image_dir is not None:
        args["storage"]["local_dir"] = image_dir
    if auth_file is not None:
        args["a1111"] = {**args.get("a1111", {}), "auth_file": auth_file}
    return args


def s3_app_args(endpoint: str, bucket: str) -> dict[str, Any]:
    """The main app's args on the S3 store; small CPU reservations so it fits beside it."""
    args = app_args_for_tests(None)
    args["models"] = args["models"][:1]
    args["default_model"] = args["models"][0]["id"]
    args["models"][0]["deployment"]["ray_actor_options"] = {"num_cpus": 0.1}
    for part in ("encoder", "ingress"):
        args[part]["deployment"]["ray_actor_options"] = {"num_cpus": 0.05}
    args["storage"] = {
        "kind": "s3",
        "bucket": bucket,
        "prefix": "e2e/",
        "endpoint_url": endpoint,
        "region": "us-east-1",
        "addressing_style": "path",
        "url_ttl_s": S3_URL_TTL_S,
    }
    return args


@pytest.fixture(scope="session")
def ray_serve() -> Iterator[int]:
    """A local Ray with Serve's HTTP proxy; yields the proxy's port."""
    import ray
    from ray import serve

    # Unix socket paths are short-limited: keep Ray's temp dir near the root.
    ray_dir = tempfile.mkdtemp(prefix="ray-", dir="/tmp")
    os.environ[SIGNING_KEY_ENV] = TEST_SIGNING_KEY
    os.environ[WEBHOOK_SECRET_ENV] = TEST_WEBHOOK_SECRET
    RAY_PORTS["metrics"] = free_port()
    ray.init(
        address="local",
        num_cpus=2,
        include_dashboard=False,
        _temp_dir=ray_dir,
        # Replica logs stay in ray_dir/session_latest/logs; keep test output readable.
        log_to_driver=False,
        _metrics_export_port=RAY_PORTS["metrics"],
    )
    try:
        port = free_port()
        serve.start(http_options={"host": "127.0.0.1", "port": port})
        yield port
    finally:
        handles.forget_handles()
        ray.shutdown()
        if not os.environ.get("IMAGEGEN_KEEP_RAY_LOGS"):
            shutil.rmtree(ray_dir, ignore_errors=True)


@pytest.fixture(scope="session")
def image_dir() -> Iterator[str]:
    path = tempfile.mkdtemp(prefix="imagegen-images-")
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture(scope="session")
def a1111_auth_file() -> Iterator[str]:
    """A1111 Basic-auth credentials in a file, as a mounted secret would hold them."""
    secret_dir = tempfile.mkdtemp(prefix="imagegen-secret-")
    auth_file = Path(secret_dir) / "a1111-auth"
    auth_file.write_text(f"{A1111_USER}:{A1111_PASSWORD}")
    yield str(auth_file)
    shutil.rmtree(secret_dir, ignore_errors=True)


@pytest.fixture(scope="session")
def base_url(ray_serve: int, image_dir: str, a1111_auth_file: str) -> str:
    from ray import serve

    from serve_app.app import build_app

    app = build_app(app_args_for_tests(image_dir, a1111_auth_file))
    serve.run(app, name=APP_NAME, route_prefix="/")
    return f"http://127.0.0.1:{ray_serve}"


@pytest.fixture(scope="session")
def hardened_url(ray_serve: int, image_dir: str, base_url: str) -> Iterator[str]:
    """The ``imagegen-hardened`` app; deleted at the end of the session."""
    from ray import serve

    from serve_app.app import build_app
    from tests.support.hardened_app import HARDENED_APP, HARDENED_PREFIX, hardened_args

    secret_dir = tempfile.mkdtemp(prefix="imagegen-keys-")
    args = hardened_args(app_args_for_tests(image_dir), secret_dir)
    serve.run(build_app(args), name=HARDENED_APP, route_prefix=HARDENED_PREFIX)
    yield f"http://127.0.0.1:{ray_serve}{HARDENED_PREFIX}"
    serve.delete(HARDENED_APP)
    shutil.rmtree(secret_dir, ignore_errors=True)


@pytest.fixture(scope="session")
def scaling_url(ray_serve: int, image_dir: str) -> Iterator[str]:
    """The ``scaling`` app (see ``tests/integration/scaling.py``); deleted at the end."""
    from ray import serve

    from serve_app.app import build_app
    from tests.support.scaling_app import SCALING_APP, SCALING_PREFIX, scaling_args

    serve.run(
        build_app(scaling_args(serve_config_args(), image_dir)),
        name=SCALING_APP,
        route_prefix=SCALING_PREFIX,
    )
    yield f"http://127.0.0.1:{ray_serve}{SCALING_PREFIX}"
    serve.delete(SCALING_APP)


@pytest.fixture(scope="session")
def s3_base_url(base_url: str, s3_endpoint: str, s3_bucket: str) -> str:
    """The same app with the S3 backend, under ``/s3`` on the same Serve proxy."""
    from ray import serve

    from serve_app.app import build_app

    app = build_app(s3_app_args(s3_endpoint, s3_bucket))
    serve.run(app, name=S3_APP_NAME, route_prefix=S3_ROUTE_PREFIX)
    return base_url + S3_ROUTE_PREFIX


@pytest.fixture(scope="session")
def s3_client_sdk(s3_base_url: str) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{s3_base_url}/v1", api_key="unused", max_retries=0, timeout=120)


@pytest.fixture(scope="session")
def metrics_port(ray_serve: int) -> int:
    """Where Ray's metrics agent serves Prometheus text for this session."""
    return RAY_PORTS["metrics"]


@pytest.fixture(scope="session")
def client(base_url: str) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{base_url}/v1", api_key="unused", max_retries=0, timeout=120)


@pytest.fixture(scope="session")
def http(base_url: str) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=base_url, timeout=120) as session:
        yield session


def model_stats() -> dict[str, Any]:
    return handles.call(APP_NAME, MODEL_DEPLOYMENT, "stats")


def model_replica_names() -> list[str]:
    """Ray actor names of the model deployment's replicas (namespace ``serve``)."""
    import ray

    prefix = f"SERVE_REPLICA::{APP_NAME}#{MODEL_DEPLOYMENT}#"
    return [
        actor["name"]
        for actor in ray.util.list_named_actors(all_namespaces=True)
        if actor["name"].startswith(prefix)
    ]


def wait_until(predicate: Any, timeout_s: float, what: str) -> Any:
    """Poll ``predicate`` until it returns a truthy value; fail after ``timeout_s``."""
    import time

    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError(f"timed out after {timeout_s}s waiting for {what}")
