"""What sharing the machine with an idle Ray Serve app costs the raw pipeline.

On a small CPU box the served model call is slower than the same call in a bare
process. This separates the serving path from the machine: it times the raw
pipeline at batch 1 (and the server's own ``engine.generate`` path, interleaved) in
a fresh process alone, then beside this project's app
started and left idle (one replica per deployment, no requests), then alone
again, and samples the idle app's own CPU use.

    python -m benchmarks.shared_machine [--calls 20]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time

from benchmarks.server import ROOT, model_config, started_server


def machine_busy() -> tuple[int, int]:
    """(busy, total) jiffies over all CPUs, from /proc/stat."""
    with open("/proc/stat") as stat:
        values = [int(v) for v in stat.readline().split()[1:]]
    idle = values[3] + values[4]
    return sum(values) - idle, sum(values)


def raw_calls(calls: int) -> dict[str, list[float]]:
    """Batch-1 call times (ms) in a fresh process, one warm-up call excluded: the bare
    ``pipe(...)`` (``raw``) and the server's own ``engine.generate`` (``engine``),
    interleaved so both see the same machine."""
    out = subprocess.run(
        [sys.executable, "-m", "benchmarks.shared_machine", "--child", str(calls)],
        capture_output=True,
        text=True,
        check=True,
        cwd=ROOT,
    )
    return json.loads(out.stdout.strip().splitlines()[-1])


def child(calls: int) -> None:
    import torch

    from common.job import GenerationJob
    from common.model_config import ModelConfig
    from deployments.model.request_mode.batching import group_jobs
    from deployments.model.request_mode.engine import DiffusersEngine

    model = model_config(ROOT / "serve_config.yaml")
    config = ModelConfig.model_validate({**model, "warmup": False})
    engine = DiffusersEngine(config)
    width, height = config.generation_size("1024x1024")

    def call() -> None:
        with torch.inference_mode():
            engine.pipe(
                prompt=["a lighthouse"],
                width=width,
                height=height,
                num_inference_steps=config.default_steps,
                guidance_scale=config.default_guidance,
                generator=[torch.Generator("cpu").manual_seed(0)],
                output_type="np",
            )

    job = GenerationJob(
        request_id="bench",
        prompt="a lighthouse",
        negative_prompt=None,
        seeds=(0,),
        gen_width=width,
        gen_height=height,
        steps=config.default_steps,
        guidance=config.default_guidance,
    )
    group = group_jobs([job])[0]
    paths = {"raw": call, "engine": lambda: engine.generate(group)}
    for path in paths.values():
        path()
    times: dict[str, list[float]] = {name: [] for name in paths}
    for _ in range(calls):
        for name, path in paths.items():
            start = time.perf_counter()
            path()
            times[name].append((time.perf_counter() - start) * 1000)
    print(json.dumps(times))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--calls", type=int, default=20)
    parser.add_argument("--port", type=int, default=8790)
    parser.add_argument("--child", type=int, default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child is not None:
        child(args.child)
        return
    rows = [("alone", raw_calls(args.calls))]
    with started_server(args.port):
        time.sleep(8)  # past start-up work
        busy0, total0 = machine_busy()
        time.sleep(10)
        busy1, total1 = machine_busy()
        cores = os.cpu_count() or 1
        idle_app = 100 * cores * (busy1 - busy0) / (total1 - total0)
        rows.append(("beside the idle app", raw_calls(args.calls)))
    rows.append(("alone again", raw_calls(args.calls)))
    print(f"idle app and machine background: {idle_app:.1f}% of one core")
    print("| batch 1 | raw `pipe(...)` median ms | min ms | `engine.generate` median ms |")
    print("|---|---|---|---|")
    for name, times in rows:
        raw, engine = times["raw"], times["engine"]
        print(
            f"| {name} | {statistics.median(raw):.1f} | {min(raw):.1f} "
            f"| {statistics.median(engine):.1f} |"
        )


if __name__ == "__main__":
    main()
