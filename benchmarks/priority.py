"""Priority scheduling under a saturating background: FCFS against priority, in one run.

The real tiny-model family in-process, driven by the real step loop (``StepLoop`` with
``AdmissionPolicy``), so the figures are the scheduler's and not HTTP's or Ray's. Four
conditions run in every round, their order rotating, on the same seeded arrivals:

- ``idle``: the interactive stream alone;
- ``occupied``: the interactive stream beside background jobs that keep the budget full
  *except* for room for the interactive requests, so they never queue or preempt: the
  same requests run alone at the same batch occupancy (the CPU baseline: on a CPU a
  step's time grows with the rows in it, on a GPU barely);
- ``fcfs``: a saturating backlog of batch jobs (mixed sizes, steps and image counts)
  plus the interactive stream, ``order: fcfs``;
- ``priority``: the same, ``order: priority``.

The interactive stream is Poisson at ``--interactive-share`` (20%) of the capacity
measured first: interactive requests per second when a backlog of them alone keeps
the replica busy.

    python -m benchmarks.priority --duration 40 --rounds 2 --out benchmarks/results/priority
"""

from __future__ import annotations

import argparse
import json
import platform
import random
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from benchmarks.priority_report import markdown, summarize
from common.job import BatchStats, GenerationJob, ImageEvent, Priority
from common.model_config import ModelConfig
from common.sizes import latent_pixels
from deployments.metrics import ModelMetrics
from deployments.model.scheduler.policy import AdmissionPolicy, Order
from deployments.model.scheduler.runner import StepRunner
from deployments.model.scheduler.step_loop import StepLoop
from deployments.model.scheduler.submission import Submission

CONDITIONS = ("idle", "occupied", "fcfs", "priority")
BACKGROUND_SIZES = (64, 96, 128)
BACKGROUND_STEPS = (10, 20, 30)
BACKGROUND_IMAGES = (1, 2, 4)


@dataclass
class Sent:
    sub: Submission
    kind: str  # "interactive" | "batch"
    sent: float
    done: float | None = None
    failed: bool = False


@dataclass
class Trial:
    """One condition's run: what was sent and when each finished."""

    loop: StepLoop
    sent: list[Sent] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def send(self, job: GenerationJob, kind: str) -> Sent:
        sub = Submission(job, stream=False)
        record = Sent(sub, kind, time.perf_counter())

        def sink(event: ImageEvent) -> None:
            if event.kind in ("final", "error"):
                record.done = time.perf_counter()
                record.failed = event.kind == "error"

        sub.sink = sink
        with self.lock:
            self.sent.append(record)
        self.loop.submit(sub)
        return record

    def running_pixels(self) -> int:
        with self.lock:
            return sum(r.sub.latent_pixels for r in self.sent if r.done is None)

    def cancel_all(self) -> None:
        with self.lock:
            for record in self.sent:
                record.sub.cancelled = True


def job(rid: str, size: int, steps: int, n: int, seed: int, priority: Priority) -> GenerationJob:
    seeds = tuple(seed + i for i in range(n))
    return GenerationJob(rid, "a barn", None, seeds, size, size, steps, 5.0, priority=priority)


def background_job(rng: random.Random, index: int) -> GenerationJob:
    size = rng.choice(BACKGROUND_SIZES)
    return job(
        f"bg-{index}",
        size,
        rng.choice(BACKGROUND_STEPS),
        rng.choice(BACKGROUND_IMAGES),
        index,
        "batch",
    )


def interactive_job(args: argparse.Namespace, index: int) -> GenerationJob:
    return job(
        f"ia-{index}", args.interactive_size, args.interactive_steps, 1, index, "interactive"
    )


def arrivals(rate: float, duration: float, seed: int) -> list[float]:
    rng = random.Random(seed)
    times, now = [], rng.expovariate(rate)
    while now < duration:
        times.append(now)
        now += rng.expovariate(rate)
    return times


def run_trial(
    condition: str,
    runner: StepRunner,
    executor: ThreadPoolExecutor,
    config: ModelConfig,
    schedule: list[float],
    args: argparse.Namespace,
) -> dict[str, Any]:
    # The occupied baseline never queues batch work, so it needs no classes: with
    # priority a batch job paused there could age past max_batch_wait_s and go first.
    order: Order = "priority" if condition == "priority" else "fcfs"
    policy = AdmissionPolicy(config.latent_pixel_budget(), order, args.max_batch_wait)
    loop = StepLoop(runner, executor, policy, BatchStats(), ModelMetrics(config.id))
    trial = Trial(loop)
    rng = random.Random(args.seed)
    reserve = latent_pixels(args.interactive_size, args.interactive_size) * args.reserve
    stop = threading.Event()
    start = time.perf_counter()

    def feed() -> None:
        index = 0
        nxt = background_job(rng, index)
        while not stop.is_set():
            if condition == "occupied":
                # The same job sequence as the backlog, each sent once it fits beside the
                # reserve (drawing another would pack the budget with small images).
                room = policy.budget - reserve - trial.running_pixels()
                if nxt.n * latent_pixels(nxt.gen_width, nxt.gen_height) <= room:
                    trial.send(nxt, "batch")
                    index += 1
                    nxt = background_job(rng, index)
                    continue
            elif condition in ("fcfs", "priority"):
                waiting = loop.snapshot()["waiting_requests"]
                if waiting < args.backlog:
                    trial.send(nxt, "batch")
                    index += 1
                    nxt = background_job(rng, index)
                    continue
            stop.wait(0.02)

    feeder = threading.Thread(target=feed, daemon=True)
    feeder.start()
    for index, at in enumerate(schedule):
        delay = start + at - time.perf_counter()
        if delay > 0:
            time.sleep(delay)
        trial.send(interactive_job(args, index), "interactive")
    time.sleep(max(0.0, start + args.duration - time.perf_counter()))
    end = time.perf_counter()
    stop.set()
    feeder.join()
    # Interactive requests still running get to finish (their latency counts); then the
    # backlog is cancelled.
    deadline = time.perf_counter() + 120
    while time.perf_counter() < deadline and any(
        r.done is None for r in trial.sent if r.kind == "interactive"
    ):
        time.sleep(0.05)
    trial.cancel_all()
    while loop.snapshot()["active_rows"] or loop.snapshot()["waiting_requests"]:
        time.sleep(0.05)
    return summarize(condition, trial.sent, start, end, loop.snapshot(), args)


def calibrate(
    runner: StepRunner, executor: ThreadPoolExecutor, config: ModelConfig, args: argparse.Namespace
) -> float:
    """Interactive requests per second the replica finishes when they alone keep it busy
    (a backlog of them, nothing else): the capacity the stream's share is taken of."""
    policy = AdmissionPolicy(config.latent_pixel_budget(), "fcfs", args.max_batch_wait)
    loop = StepLoop(runner, executor, policy, BatchStats(), ModelMetrics(config.id))
    trial = Trial(loop)
    start = time.perf_counter()
    index = 0
    while time.perf_counter() - start < args.calibrate_s:
        if loop.snapshot()["waiting_requests"] < 4:
            trial.send(interactive_job(args, index), "interactive")
            index += 1
        else:
            time.sleep(0.01)
    end = time.perf_counter()
    done = sum(1 for r in trial.sent if r.done is not None and r.done <= end and not r.failed)
    trial.cancel_all()
    while loop.snapshot()["active_rows"] or loop.snapshot()["waiting_requests"]:
        time.sleep(0.05)
    return done / (end - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", default="tiny-sdxl")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--duration", type=float, default=40.0)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--calibrate-s", type=float, default=15.0)
    parser.add_argument("--backlog", type=int, default=12, help="batch jobs kept waiting")
    parser.add_argument("--interactive-share", type=float, default=0.2)
    parser.add_argument(
        "--reserve", type=int, default=4, help="occupied: interactive images kept free"
    )
    parser.add_argument("--interactive-size", type=int, default=128)
    parser.add_argument("--interactive-steps", type=int, default=8)
    parser.add_argument("--max-batch-size", type=int, default=16)
    parser.add_argument("--max-batch-wait", type=float, default=10.0)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default="benchmarks/results/priority")
    args = parser.parse_args()

    from deployments.model.families.registry import load_family

    config = ModelConfig.model_validate(
        {
            "id": args.model,
            "source": f"builtin:{args.model}",
            "torch_threads": args.threads,
            # The budget serve_config.yaml gives the tiny model (16 images at its
            # 128 px generation size), stated here: this config has no generation_scale.
            "batching": {
                "max_batch_size": args.max_batch_size,
                "max_batch_latent_pixels": args.max_batch_size * latent_pixels(128, 128),
            },
        }
    )
    executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="pipeline")
    family = executor.submit(load_family, config).result()
    runner = StepRunner(family)
    capacity = calibrate(runner, executor, config, args)
    if capacity <= 0:
        raise SystemExit("no request finished during calibration: raise --calibrate-s")
    rate = args.interactive_share * capacity
    print(f"capacity {capacity:.2f} interactive/s; stream {rate:.2f}/s", flush=True)
    rounds: list[dict[str, Any]] = []
    for round_ in range(args.rounds):
        schedule = arrivals(rate, args.duration, args.seed + round_)
        order = CONDITIONS[round_ % 4 :] + CONDITIONS[: round_ % 4]
        for condition in order:
            result = run_trial(condition, runner, executor, config, schedule, args)
            result["round"] = round_
            rounds.append(result)
            print(json.dumps({k: v for k, v in result.items() if k != "jobs"}), flush=True)
    report = {
        "command": "python -m benchmarks.priority " + " ".join(sys.argv[1:]),
        "machine": platform.platform(),
        "load_average_at_end": list(__import__("os").getloadavg()),
        "capacity_interactive_per_s": capacity,
        "interactive_rate_per_s": rate,
        "args": vars(args),
        "rounds": rounds,
    }
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.with_suffix(".json").write_text(json.dumps(report, indent=2))
    out.with_suffix(".md").write_text(markdown(report))
    print(markdown(report))


if __name__ == "__main__":
    main()
