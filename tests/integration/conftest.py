"""One real Ray Serve app on the tiny model for the whole integration tier.

Ray runs in an isolated temp dir with ``address="local"`` (never joining another
cluster on the machine) and is torn down with ``ray.shutdown()``, never ``ray stop``.
Deployments take fractional CPUs so everything fits on 2 cores.
"""

from __future__ import annotations

import copy
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

ROOT = Path(__file__).resolve().parents[2]
APP_NAME = "imagegen"
MODEL_DEPLOYMENT = "Model:tiny-sdxl"
# The A1111 routes run with Basic auth on, read from a secret file as in production.
A1111_USER, A1111_PASSWORD = "webui", "s3cret-pass"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def app_args_for_tests(image_dir: str, auth_file: str | None = None) -> dict[str, Any]:
    """serve_config.yaml's own args, resized for a 2-core test machine."""
    doc = yaml.safe_load((ROOT / "serve_config.yaml").read_text())
    args = copy.deepcopy(doc["applications"][0]["args"])
    model = args["models"][0]
    model["deployment"] = {
        "num_replicas": 1,
        "max_ongoing_requests": 64,
        "ray_actor_options": {"num_cpus": 0.5},
    }
    args["encoder"]["deployment"] = {"num_replicas": 1, "ray_actor_options": {"num_cpus": 0.25}}
    args["ingress"]["deployment"] = {
        "num_replicas": 1,
        "max_ongoing_requests": 256,
        "ray_actor_options": {"num_cpus": 0.25},
    }
    args["storage"]["local_dir"] = image_dir
    if auth_file is not None:
        args["a1111"] = {**args.get("a1111", {}), "auth_file": auth_file}
    return args


@pytest.fixture(scope="session")
def base_url() -> Iterator[str]:
    import ray
    from ray import serve

    from serve_app.app import build_app

    # Unix socket paths are short-limited: keep Ray's temp dir near the root.
    ray_dir = tempfile.mkdtemp(prefix="ray-", dir="/tmp")
    image_dir = tempfile.mkdtemp(prefix="imagegen-images-")
    secret_dir = tempfile.mkdtemp(prefix="imagegen-secret-")
    auth_file = Path(secret_dir) / "a1111-auth"
    auth_file.write_text(f"{A1111_USER}:{A1111_PASSWORD}")
    ray.init(
        address="local",
        num_cpus=2,
        include_dashboard=False,
        _temp_dir=ray_dir,
        # Replica logs stay in ray_dir/session_latest/logs; keep test output readable.
        log_to_driver=False,
    )
    try:
        port = free_port()
        serve.start(http_options={"host": "127.0.0.1", "port": port})
        app = build_app(app_args_for_tests(image_dir, str(auth_file)))
        serve.run(app, name=APP_NAME, route_prefix="/")
        yield f"http://127.0.0.1:{port}"
    finally:
        ray.shutdown()
        shutil.rmtree(ray_dir, ignore_errors=True)
        shutil.rmtree(image_dir, ignore_errors=True)
        shutil.rmtree(secret_dir, ignore_errors=True)


@pytest.fixture(scope="session")
def client(base_url: str) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{base_url}/v1", api_key="unused", max_retries=0, timeout=120)


@pytest.fixture(scope="session")
def http(base_url: str) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=base_url, timeout=120) as session:
        yield session


def model_stats() -> dict[str, Any]:
    from ray import serve

    handle = serve.get_deployment_handle(MODEL_DEPLOYMENT, APP_NAME)
    return handle.stats.remote().result()
