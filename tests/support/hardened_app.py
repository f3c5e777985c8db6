"""The ``imagegen-hardened`` test app: serve_config.yaml's first model, made small.

- API keys on, read from a file as from a mounted secret (:data:`API_KEY`), and a
  batch-limited key (:data:`BATCH_KEY`) from another.
- A tiny model queue (``max_ongoing_requests`` 2, ``max_queued_requests`` 4), so a
  burst of requests meets backpressure at once, and the ingress's own admission at 48
  (far below Serve's ``max_ongoing_requests`` of 512), so a storm of hundreds meets a
  JSON 429 at once while ``/health``, never refused, keeps answering.
- Cheap limits (2 images, 4 steps, 4 MP per request), so schemathesis's
  generated requests that are valid stay fast.
- CORS on for one origin (:data:`CORS_ORIGIN`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

HARDENED_APP = "imagegen-hardened"
HARDENED_PREFIX = "/hardened"
HARDENED_MODEL = "Model:tiny-sdxl"
API_KEY = "sk-hardened-0123456789abcdef"
SECOND_KEY = "sk-second-fedcba9876543210"
BATCH_KEY = "sk-batch-only-0123456789ab"  # max_priority: batch
CORS_ORIGIN = "https://app.example"
MODEL_ONGOING, MODEL_QUEUED = 2, 4
INGRESS_ONGOING, INGRESS_LIMIT = 512, 48
JOBS_MAX_QUEUED = 12


def hardened_args(args: dict[str, Any], secret_dir: str) -> dict[str, Any]:
    """``args`` (the suite's copy of serve_config.yaml) for the hardened app."""
    keys_file = Path(secret_dir) / "api-keys"
    keys_file.write_text(f"# two keys, one per line\n{API_KEY}\n{SECOND_KEY}\n")
    batch_keys_file = Path(secret_dir) / "batch-api-keys"
    batch_keys_file.write_text(f"{BATCH_KEY}\n")
    model = args["models"][0]
    model.update(
        max_steps=4,
        default_steps=2,
        max_images_per_request=2,
        max_pixels_per_request=4 * 1024 * 1024,
        max_side=1024,
        max_pixels=1024 * 1024,
        batching={"max_batch_size": 2, "batch_wait_timeout_s": 0.0},
        deployment={
            "num_replicas": 1,
            "max_ongoing_requests": MODEL_ONGOING,
            "max_queued_requests": MODEL_QUEUED,
            "ray_actor_options": {"num_cpus": 0.05},
        },
    )
    args["models"] = [model]
    args["default_model"] = model["id"]
    args["encoder"]["deployment"] = {
        "num_replicas": 1,
        "max_queued_requests": 64,
        "ray_actor_options": {"num_cpus": 0.05},
    }
    # The ingress's own admission refuses past INGRESS_LIMIT (JSON 429), far below
    # Serve's max_ongoing_requests, so the proxy hands every request of a storm to the
    # replica at once (a request waiting in the proxy's queue would delay /health too)
    # and never sheds with its plain-text 503: max_queued_requests is unbounded.
    args["ingress"]["max_concurrent_requests"] = INGRESS_LIMIT
    args["ingress"]["deployment"] = {
        "num_replicas": 1,
        "max_ongoing_requests": INGRESS_ONGOING,
        "ray_actor_options": {"num_cpus": 0.05},
    }
    args["ingress"]["api_keys"] = {
        "keys_file": str(keys_file),
        "batch_keys_file": str(batch_keys_file),
        "required": True,
    }
    # Few unfinished jobs per replica, so the test can pass jobs.max_queued.
    args["jobs"] = {**args.get("jobs", {}), "max_queued": JOBS_MAX_QUEUED}
    args["ingress"]["cors"] = {"allow_origins": [CORS_ORIGIN]}
    # Its own A1111 options (no Basic auth here), so fuzzed options stay in this app.
    args["a1111"] = {"enabled": True, "auth_env": None, "options_dir": f"{secret_dir}/a1111"}
    return args
