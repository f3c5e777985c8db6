"""Does a DeploymentResponse handed to another handle call visit the caller's process?

Before issue 27 the ingress did ``encoder.encode.remote(model.generate.remote(job),
spec)`` for plain requests. This measures what that costs the middle process,
against the middle process awaiting the array and sending it on itself (what the
streamed path did), in a three-deployment Serve app shaped like ours: ``Source``
returns a uint8 array of ``--mb`` MB, ``Sink`` reads its size, ``Middle`` is the
ingress. The middle replica reports its own CPU seconds (``getrusage``) and the peak
RSS for each way, ``--calls`` calls each (by reference first, as peak RSS only grows).

    python -m benchmarks.handle_pass_through --mb 64 --calls 5
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import tempfile
import time
from typing import Any

import numpy as np
from ray import serve
from ray.serve.handle import DeploymentHandle


@serve.deployment
class Source:
    def pixels(self, mb: int) -> np.ndarray:
        return np.full((mb, 1024, 1024), 7, np.uint8)


@serve.deployment
class Sink:
    def size(self, pixels: np.ndarray) -> int:
        return int(pixels.nbytes)


@serve.deployment
class Middle:
    def __init__(self, source: DeploymentHandle, sink: DeploymentHandle) -> None:
        self.source, self.sink = source, sink

    async def once(self, mb: int, by_reference: bool) -> dict[str, Any]:
        cpu_before = _cpu_s()
        started = time.perf_counter()
        response = self.source.pixels.remote(mb)
        if by_reference:
            size = await self.sink.size.remote(response)
        else:
            size = await self.sink.size.remote(await response)
        return {
            "bytes": size,
            "middle_cpu_s": _cpu_s() - cpu_before,
            "wall_s": time.perf_counter() - started,
            "middle_maxrss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        }


def _cpu_s() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--mb", type=int, default=64)
    parser.add_argument("--calls", type=int, default=5)
    args = parser.parse_args()
    import ray

    ray_dir = tempfile.mkdtemp(prefix="ray-", dir="/tmp")
    ray.init(address="local", include_dashboard=False, _temp_dir=ray_dir, log_to_driver=False)
    try:
        app = Middle.bind(Source.bind(), Sink.bind())
        handle = serve.run(app, name="pass-through", route_prefix=None)
        handle.once.remote(1, True).result()  # warm-up
        rows: dict[str, list[dict[str, Any]]] = {"by_reference": [], "through_middle": []}
        # By reference first: the middle's peak RSS only ever grows.
        for _ in range(args.calls):
            rows["by_reference"].append(handle.once.remote(args.mb, True).result())
        for _ in range(args.calls):
            rows["through_middle"].append(handle.once.remote(args.mb, False).result())
    finally:
        ray.shutdown()
        shutil.rmtree(ray_dir, ignore_errors=True)
    env = {k: v for k, v in os.environ.items() if k.startswith("RAY_SERVE_")}
    print(json.dumps({"mb": args.mb, "env": env, **rows}, indent=1))
    for way, results in rows.items():
        cpu = sorted(r["middle_cpu_s"] for r in results)
        wall = sorted(r["wall_s"] for r in results)
        print(
            f"{way}: middle CPU median {cpu[len(cpu) // 2] * 1000:.1f} ms, "
            f"wall median {wall[len(wall) // 2] * 1000:.0f} ms, "
            f"middle peak RSS {max(r['middle_maxrss_mb'] for r in results):.0f} MB"
        )


if __name__ == "__main__":
    main()
