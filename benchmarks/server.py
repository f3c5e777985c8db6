"""Start this project's app in a private Ray instance for a benchmark, and stop it after.

It runs the ``args`` of a serve config with exactly one replica per deployment (so
the model's batch counters are the whole story), keeping each deployment's own
resources (CPUs, GPUs). ``overrides`` patches the model entry, e.g. to turn
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
    # Only the first model is measured; the others would just take memory.
    model = args["models"][0]
    args["models"] = [model]
    args["default_model"] = model["id"]
    for key, value in (model_overrides or {}).items():
        model[key] = value
    batching = model.get("batching", {})
    model["deployment"] = _one_replica(
        model.get("deployment", {}), 4 * batching.get("max_batch_size", 16)
    )
    for part in ("encoder", "ingress"):
        section = args.setdefault(part, {})
        section["deployment"] = _one_replica(section.get("deployment", {}), 256)
    return args


def _one_replica(options: dict[str, Any], max_ongoing: int) -> dict[str, Any]:
    fixed = {k: v for k, v in options.items() if k != "autoscaling_config"}
    return {**fixed, "num_replicas": 1, "max_ongoing_requests": max_ongoing}


def model_config(config: Path, model_id: str | None = None) -> dict[str, Any]:
    """A model entry of ``config``: the one named ``model_id`` (id or alias), or the first."""
    models = yaml.safe_load(config.read_text())["applications"][0]["args"]["models"]
    if model_id is None:
        return models[0]
    for model in models:
        if model_id == model["id"] or model_id in model.get("aliases", []):
            return model
    raise SystemExit(f"no model {model_id!r} in {config}; have {[m['id'] for m in models]}")


@contextmanager
def started_server(
    port: int, config: Path = ROOT / "serve_config.yaml", **model_overrides: Any
) -> Iterator[str]:
    from serve_app.launcher import apply_defaults, private_haproxy_ports

    apply_defaults()  # Ray's serving-path switches as the app ships them, unless set
    private_haproxy_ports()  # beside a server that holds HAProxy's fixed ports
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
