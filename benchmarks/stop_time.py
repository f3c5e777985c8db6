"""How long ``serve run serve_config.yaml`` takes to stop on SIGINT and on SIGTERM,
with Ray's fast path (``RAY_SERVE_ENABLE_HA_PROXY=1``, ``RAY_SERVE_THROUGHPUT_OPTIMIZED=1``)
off and on.

Each case starts ``serve run`` on a copy of the config (the first model only, its own
free port, its own ``RAY_TMPDIR`` so it never joins another Ray on the machine), in
its own session with SIGINT at its default disposition (a process started with ``&``
from a non-interactive shell inherits SIGINT *ignored*, and Python then installs no
KeyboardInterrupt handler at all), waits until ``/v1/models`` answers, sends the
signal, and times the exit. Then it counts the processes of that Ray session still
alive (by its temp dir in their command line) and kills what is left of the session.

    python -m benchmarks.stop_time --out benchmarks/results/stop-time
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx
import psutil
import yaml

from benchmarks.ray_fast_path import FAST_PATH_ENV, OFF_ENV, free_port, uptime

ROOT = Path(__file__).resolve().parents[1]
SERVE = Path(os.environ.get("VIRTUAL_ENV", ROOT / ".venv")) / "bin" / "serve"


def config_copy(folder: Path, port: int) -> Path:
    doc = yaml.safe_load((ROOT / "serve_config.yaml").read_text())
    doc["http_options"] = {"host": "127.0.0.1", "port": port}
    args = doc["applications"][0]["args"]
    args["models"] = args["models"][:1]
    args["default_model"] = args["models"][0]["id"]
    path = folder / "serve_config.yaml"
    path.write_text(yaml.safe_dump(doc))
    return path


def session_processes(ray_dir: Path) -> list[psutil.Process]:
    found = []
    for proc in psutil.process_iter(["cmdline"]):
        try:
            if any(str(ray_dir) in part for part in proc.info["cmdline"] or []):
                found.append(proc)
        except psutil.Error:
            continue
    return found


def one_case(fast_path: bool, sig: signal.Signals, serve: Path) -> dict[str, Any]:
    folder = Path(tempfile.mkdtemp(prefix="stop-", dir="/tmp"))
    ray_dir = folder / "ray"
    ray_dir.mkdir()
    port = free_port()
    env = {k: v for k, v in os.environ.items() if k not in FAST_PATH_ENV}
    env.update({"RAY_TMPDIR": str(ray_dir), "PYTHONPATH": str(ROOT)})
    env.update(FAST_PATH_ENV if fast_path else OFF_ENV)
    log = (folder / "serve.log").open("wb")
    proc = subprocess.Popen(
        [str(serve), "run", str(config_copy(folder, port))],
        cwd=ROOT,
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )
    result: dict[str, Any] = {"fast_path": fast_path, "signal": sig.name, "uptime": uptime()}
    try:
        started = time.perf_counter()
        while time.perf_counter() - started < 600:
            try:
                if httpx.get(f"http://127.0.0.1:{port}/v1/models", timeout=5).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if proc.poll() is not None:
                raise RuntimeError(f"serve run exited early: {folder / 'serve.log'}")
            time.sleep(0.5)
        result["ready_s"] = time.perf_counter() - started
        stop_sent = time.perf_counter()
        proc.send_signal(sig)
        try:
            proc.wait(timeout=60)
            result["exit_s"] = time.perf_counter() - stop_sent
            result["returncode"] = proc.returncode
        except subprocess.TimeoutExpired:
            result["exit_s"] = None  # still running after 60 s
        time.sleep(2)
        left = session_processes(ray_dir)
        result["session_processes_left_2s_after"] = sorted({p.name() for p in left})
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
        for leftover in session_processes(ray_dir):
            leftover.kill()
        log.close()
        result["log_tail"] = (folder / "serve.log").read_text(errors="replace")[-1500:]
        shutil.rmtree(folder, ignore_errors=True)
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--serve", type=Path, default=SERVE)
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/stop-time"))
    args = parser.parse_args()
    results = [
        one_case(fast_path, sig, args.serve)
        for sig in (signal.SIGINT, signal.SIGTERM)
        for fast_path in (False, True)
    ]
    args.out.with_suffix(".json").write_text(json.dumps(results, indent=1))
    for r in results:
        print(
            f"fast path {'on ' if r['fast_path'] else 'off'} {r['signal']}: ready in "
            f"{r.get('ready_s', float('nan')):.1f} s, exit in {r.get('exit_s')} s "
            f"(rc {r.get('returncode')}), left: {r.get('session_processes_left_2s_after')}"
        )


if __name__ == "__main__":
    main()
