"""Start this project's app in a private Ray instance for a benchmark, and stop it after.

It runs the ``args`` of ``serve_config.yaml`` with one model replica (so the batch
counters it reports are the whole story) and fractional CPUs for the rest, the way
the integration tests do. ``overrides`` patches the model entry, e.g. to turn
batching off for the naive baseline.
"""

from __future__ import annotations

import copy
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[1]


def app_args(config: Path, model_overrides: dict[str, Any] | None = None) -> dict[str, Any]:
    doc = yaml.safe_load(config.read_text())
    args = copy.deepcopy(doc["applications"][0]["args"])
    model = args["models"][0]
    batching = model.get("batching", {})
    model["deployment"] = {
        "num_replicas": 1,
        "max_ongoing_requests": 4 * batching.get("max_batch_size", 16),
        "ray_actor_options": {"num_cpus": 1},
    }
    for key, value in (model_overrides or {}).items():
        model[key] = value
    for part in ("encoder", "ingress"):
        args[part]["deployment"] = {
            "num_replicas": 1,
            "max_ongoing_requests": 256,
            "ray_actor_options": {"num_cpus": 0.25},
        }
    return args


def model_config(config: Path) -> dict[str, Any]:
    return app_args(config)["models"][0]


@contextmanager
def started_server(
    port: int, config: Path = ROOT / "serve_config.yaml", **model_overrides: Any
) -> Iterator[str]:
    import ray
    from ray import serve

    from serve_app.app import build_app

    ray_dir = tempfile.mkdtemp(prefix="ray-", dir="/tmp")
    ray.init(address="local", include_dashboard=False, _temp_dir=ray_dir, log_to_driver=False)
    try:
        serve.start(http_options={"host": "127.0.0.1", "port": port})
        serve.run(build_app(app_args(config, model_overrides)), name="imagegen", route_prefix="/")
        yield f"http://127.0.0.1:{port}"
    finally:
        ray.shutdown()
        shutil.rmtree(ray_dir, ignore_errors=True)
