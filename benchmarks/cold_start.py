"""Cold start of a model that scales to zero: first request after idle, end to end.

    .venv/bin/python benchmarks/cold_start.py [--runs 3] [--out cold_start.json]

Starts a local Ray with serve_config.yaml's app (fractional CPUs; the scale-to-zero
model goes back to zero 2 s after its last request), then, for each run: waits until
the model has no replica, times one OpenAI-SDK request for it (the cold start: a
replica process starts, imports torch and diffusers, loads and warms up the model,
and generates), then times one more request on the now-warm replica. Writes JSON
``{config, stats, raw}``. Ray is stopped with ``ray.shutdown()``.
"""

from __future__ import annotations

import argparse
import copy
import json
import platform
import shutil
import socket
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import openai
import yaml

ROOT = Path(__file__).resolve().parents[1]
APP = "coldstart"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def app_args() -> tuple[dict[str, Any], str]:
    """serve_config.yaml's args sized for a 2-core box; returns (args, on-demand model id)."""
    doc = yaml.safe_load((ROOT / "serve_config.yaml").read_text())
    args = copy.deepcopy(doc["applications"][0]["args"])
    on_demand = None
    for model in args["models"]:
        deployment = model["deployment"]
        scaling = deployment.get("autoscaling_config") or {}
        if on_demand is None and scaling.get("min_replicas", 1) == 0:
            on_demand = model["id"]
            scaling |= {
                "downscale_to_zero_delay_s": 2.0,
                "metrics_interval_s": 0.5,
                "look_back_period_s": 1.5,
            }
            deployment["ray_actor_options"] = {"num_cpus": 0.5}
        else:
            model["deployment"] = {"num_replicas": 1, "ray_actor_options": {"num_cpus": 0.5}}
    if on_demand is None:
        raise SystemExit("serve_config.yaml has no model with min_replicas: 0")
    for part in ("encoder", "ingress"):
        args[part]["deployment"] = {"num_replicas": 1, "ray_actor_options": {"num_cpus": 0.25}}
    return args, on_demand


def replicas(deployment: str) -> int:
    from ray import serve

    overview = serve.status().applications[APP].deployments[deployment]
    return sum(overview.replica_states.values())


def wait_asleep(deployment: str, timeout_s: float = 300) -> None:
    deadline = time.monotonic() + timeout_s
    while replicas(deployment) != 0:
        if time.monotonic() > deadline:
            raise TimeoutError(f"{deployment} did not scale to zero in {timeout_s}s")
        time.sleep(0.25)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--size", default="1024x1024")
    parser.add_argument("--out", type=Path, default=None)
    opts = parser.parse_args()

    import ray
    from ray import serve

    from common.model_config import ModelConfig
    from serve_app.app import build_app

    args, model_id = app_args()
    deployment = ModelConfig.model_validate(
        next(m for m in args["models"] if m["id"] == model_id)
    ).deployment_name()
    ray_dir = tempfile.mkdtemp(prefix="ray-", dir="/tmp")
    ray.init(
        address="local",
        num_cpus=2,
        include_dashboard=False,
        log_to_driver=False,
        _temp_dir=ray_dir,
    )
    raw: list[dict[str, float]] = []
    try:
        port = free_port()
        serve.start(http_options={"host": "127.0.0.1", "port": port})
        serve.run(build_app(args), name=APP, route_prefix="/")
        client = openai.OpenAI(
            base_url=f"http://127.0.0.1:{port}/v1", api_key="unused", max_retries=0, timeout=600
        )
        for run in range(opts.runs):
            wait_asleep(deployment)
            timings = {}
            for phase in ("cold_s", "warm_s"):
                started = time.perf_counter()
                client.images.generate(model=model_id, prompt="a lighthouse", size=opts.size)
                timings[phase] = time.perf_counter() - started
            raw.append(timings)
            print(f"run {run + 1}: cold {timings['cold_s']:.2f} s, warm {timings['warm_s']:.2f} s")
    finally:
        ray.shutdown()
        shutil.rmtree(ray_dir, ignore_errors=True)

    cold = [r["cold_s"] for r in raw]
    warm = [r["warm_s"] for r in raw]
    result = {
        "config": {
            "model": model_id,
            "size": opts.size,
            "runs": opts.runs,
            "machine": platform.machine(),
            "ray": ray.__version__,
        },  # fmt: skip
        "stats": {
            "cold_start_median_s": round(statistics.median(cold), 3),
            "cold_start_min_s": round(min(cold), 3),
            "cold_start_max_s": round(max(cold), 3),
            "warm_request_median_s": round(statistics.median(warm), 3),
        },
        "raw": raw,
    }
    text = json.dumps(result, indent=2)
    print(text)
    if opts.out:
        opts.out.write_text(text + "\n")


if __name__ == "__main__":
    main()
