"""Per-hop profiles of a running app: which process is which hop, and what its Python does.

``benchmarks/cpu_split.py --profile DIR`` uses this while the app serves a closed
loop: every process of the benchmark's own Ray instance (the driver's descendants,
so other Ray instances on the machine are never touched) is put in a hop (proxy,
ingress, model, encoder, Ray core), each Python hop is sampled with ``py-spy record
--nonblocking`` (it never pauses the process), and each sample's stack is put in one
category: model code in torch, the step loop's own Python, the scheduler steps, image
encoding, Ray Serve's request path, and the rest. Raw stacks (collapsed, one line per
stack, readable by speedscope and flamegraph.pl) and a small SVG flame graph per hop
are written to DIR.
"""

from __future__ import annotations

import html
import subprocess
import sys
from collections import Counter
from pathlib import Path

import psutil

HOPS = ("proxy", "ingress", "model", "encoder", "ray core", "client")
SAMPLE_RATE_HZ = 50  # py-spy samples per second per thread

# Checked in order against every frame of a stack: the first category with a frame
# in it names the sample. py-spy writes a frame as "func (path:line)", the path
# relative to sys.path, so a needle matches after "(" or "/".
CATEGORIES = (
    ("torch: VAE decode", ("diffusers/models/autoencoders/",)),
    ("torch: text encoders", ("transformers/models/",)),
    ("torch: denoiser", ("diffusers/models/", "torch/nn/")),
    ("scheduler steps", ("diffusers/schedulers/", "families/batched_step.py")),
    ("image codec (PIL)", ("PIL/", "encoder/codec.py")),
    ("step loop + families", ("model/scheduler/", "model/families/")),
    ("app code", ("serve_app/", "deployments/", "storage/", "common/")),
    ("Ray Serve", ("ray/serve/",)),
    ("Ray core (Python)", ("ray/",)),
    ("HTTP/ASGI", ("starlette/", "uvicorn/", "fastapi/", "h11/", "httptools/")),
    ("asyncio", ("asyncio/",)),
)


def hop_of(cmdline: str) -> str:
    """The hop a process of the app's Ray instance belongs to, from its title."""
    if "ProxyActor" in cmdline or "haproxy" in cmdline.split(" ", 1)[0]:
        return "proxy"  # Serve's proxy actor, or with RAY_SERVE_ENABLE_HA_PROXY=1 HAProxy too
    if "ServeReplica:" in cmdline:
        for hop in ("Ingress", "Encoder", "Model"):
            if f":{hop}" in cmdline:
                return hop.lower()
    return "ray core"


def app_processes() -> dict[int, tuple[str, str]]:
    """pid -> (hop, title) for this process (the client) and everything it started."""
    me = psutil.Process()
    out = {me.pid: ("client", "load generator + Ray driver")}
    for child in me.children(recursive=True):
        try:
            title = " ".join(child.cmdline()) or child.name()
        except psutil.Error:
            continue
        if "py-spy" in title:
            continue
        out[child.pid] = (hop_of(title), title[:80])
    return out


def is_python(pid: int) -> bool:
    try:
        proc = psutil.Process(pid)
        return "python" in proc.name() or proc.cmdline()[0].startswith("ray::")
    except (psutil.Error, IndexError):
        return False


def start_recording(
    processes: dict[int, tuple[str, str]],
    duration_s: float,
    out_dir: Path,
    rate: int = SAMPLE_RATE_HZ,
) -> dict[int, tuple[subprocess.Popen[bytes], Path]]:
    """``py-spy record`` on every Python hop except the client; returns pid -> (proc, file)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    py_spy = str(Path(sys.executable).with_name("py-spy"))
    recorders = {}
    for pid, (hop, _title) in processes.items():
        if hop == "client" or not is_python(pid):
            continue
        name = f"{hop.replace(' ', '-')}-{pid}.txt"
        path = out_dir / name
        command = [py_spy, "record", "--pid", str(pid), "--duration", str(int(duration_s))]
        command += ["--rate", str(rate), "--nonblocking", "--format", "raw", "-o", str(path)]
        recorders[pid] = (
            subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL),
            path,
        )
    return recorders


def wait_recording(recorders: dict[int, tuple[subprocess.Popen[bytes], Path]]) -> None:
    for proc, _ in recorders.values():
        try:
            proc.wait(timeout=120)
        except subprocess.TimeoutExpired:
            proc.terminate()
            proc.wait()


def read_stacks(path: Path) -> Counter[str]:
    """Collapsed stacks ``frame;frame;... count`` -> Counter of stack -> samples."""
    stacks: Counter[str] = Counter()
    if not path.exists():
        return stacks
    for line in path.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        if stack and count.isdigit():
            stacks[stack] += int(count)
    return stacks


def category(stack: str) -> str:
    frames = stack.split(";")
    for name, needles in CATEGORIES:
        for needle in needles:
            if any(f"({needle}" in frame or f"/{needle}" in frame for frame in frames):
                return name
    return "other Python"


def categories(stacks: Counter[str]) -> dict[str, int]:
    out: Counter[str] = Counter()
    for stack, count in stacks.items():
        out[category(stack)] += count
    return dict(out.most_common())


def write_svg(stacks: Counter[str], path: Path, title: str, width: int = 1200) -> None:
    """A minimal icicle flame graph (root on top); hover a box for its frame and share."""
    total = sum(stacks.values())
    if not total:
        return
    counts: Counter[tuple[str, ...]] = Counter()
    for stack, count in stacks.items():
        frames = tuple(stack.split(";"))
        for depth in range(1, len(frames) + 1):
            counts[frames[:depth]] += count
    row_h, boxes, depth_max = 16, [], 0
    offsets: dict[tuple[str, ...], float] = {(): 0.0}
    for key in sorted(counts, key=lambda k: (len(k), k)):
        parent = key[:-1]
        x = offsets.get(parent, 0.0)
        w = counts[key] / total * width
        offsets[parent] = x + w
        offsets[key] = x
        depth_max = max(depth_max, len(key))
        if w < 0.5:
            continue
        frame = html.escape(key[-1])
        share = counts[key] / total * 100
        y = 20 + (len(key) - 1) * row_h
        label = html.escape(key[-1].split(" (")[0])[: int(w / 7)]
        boxes.append(
            f'<g><title>{frame} {share:.1f}%</title><rect x="{x:.1f}" y="{y}" width="{w:.1f}" '
            f'height="{row_h - 1}" fill="hsl({(hash(key[-1]) % 60) + 10},80%,65%)"/>'
            f'<text x="{x + 2:.1f}" y="{y + 12}" font-size="11">{label}</text></g>'
        )
    height = 30 + depth_max * row_h
    path.write_text(
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
        f'font-family="monospace"><text x="4" y="14" font-size="12">{html.escape(title)} '
        f"({total} samples)</text>{''.join(boxes)}</svg>"
    )


def hop_report(
    processes: dict[int, tuple[str, str]],
    cpu_delta: dict[int, float],
    recorders: dict[int, tuple[subprocess.Popen[bytes], Path]],
    elapsed_s: float,
    images: int,
    out_dir: Path | None,
) -> list[dict[str, object]]:
    """One row per hop: CPU share of a core, CPU ms per image, and its samples by category."""
    rows = []
    for hop in HOPS:
        pids = [pid for pid, (h, _) in processes.items() if h == hop]
        cpu = sum(cpu_delta.get(pid, 0.0) for pid in pids)
        stacks: Counter[str] = Counter()
        for pid in pids:
            if pid in recorders:
                stacks.update(read_stacks(recorders[pid][1]))
        if out_dir is not None and stacks:
            svg = out_dir / f"{hop.replace(' ', '-')}.svg"
            write_svg(stacks, svg, f"{hop}: py-spy samples under load")
        rows.append(
            {
                "hop": hop,
                "processes": len(pids),
                "cpu_share_of_one_core": cpu / elapsed_s,
                "cpu_ms_per_image": cpu / images * 1000 if images else float("nan"),
                "samples": sum(stacks.values()),
                "by_category": categories(stacks),
            }
        )
    return rows


def markdown(rows: list[dict[str, object]]) -> str:
    lines = [
        "| hop | processes | CPU, % of a core | CPU ms per image | where its Python samples are |",
        "|---|---|---|---|---|",
    ]
    for row in rows:
        by = row["by_category"]
        assert isinstance(by, dict)
        total = sum(by.values()) or 1
        parts = ", ".join(f"{name} {count / total:.0%}" for name, count in list(by.items())[:5])
        share = float(row["cpu_share_of_one_core"])  # type: ignore[arg-type]
        per_image = float(row["cpu_ms_per_image"])  # type: ignore[arg-type]
        lines.append(
            f"| {row['hop']} | {row['processes']} | {share * 100:.1f} | {per_image:.0f} | "
            f"{parts or '(not Python, or no samples)'} |"
        )
    return "\n".join(lines) + "\n"


def cpu_outside_torch(
    rows: list[dict[str, object]], images: int, rate: int = SAMPLE_RATE_HZ
) -> dict[str, float]:
    """CPU ms per image spent outside torch: every hop's CPU but the model's and the
    load generator's (they run no torch), plus the model replica's Python outside
    torch, counted from its samples (one sample of one running thread is ``1/rate`` s;
    torch's own OpenMP threads are not Python and are not sampled). Needs ``--profile``."""
    if not images:
        return {}
    outside_model = sum(
        float(row["cpu_ms_per_image"])  # type: ignore[arg-type]
        for row in rows
        if row["hop"] not in ("model", "client")
    )
    model = next(row for row in rows if row["hop"] == "model")
    by = model["by_category"]
    assert isinstance(by, dict)
    python = sum(count for name, count in by.items() if not name.startswith("torch:"))
    model_python = python * 1000 / rate / images
    return {
        "outside_model_ms": outside_model,
        "model_python_ms": model_python,
        "total_ms": outside_model + model_python,
    }


def cpu_times(pids: list[int]) -> dict[int, float]:
    out = {}
    for pid in pids:
        try:
            times = psutil.Process(pid).cpu_times()
        except psutil.Error:
            continue
        out[pid] = times.user + times.system
    return out


def main() -> None:
    """Re-read a profile directory (after changing CATEGORIES): the hop table again.

    python -m benchmarks.hop_profile DIR SPLIT.json  (SPLIT.json: cpu_split's --out)
    """
    import json

    out_dir, split = Path(sys.argv[1]), json.loads(Path(sys.argv[2]).read_text())
    rows = []
    for row in split["hops"]:
        stacks: Counter[str] = Counter()
        for path in sorted(out_dir.glob(f"{str(row['hop']).replace(' ', '-')}-*.txt")):
            stacks.update(read_stacks(path))
        if stacks:
            write_svg(stacks, out_dir / f"{row['hop'].replace(' ', '-')}.svg", str(row["hop"]))
        rows.append({**row, "samples": sum(stacks.values()), "by_category": categories(stacks)})
    split["hops"] = rows
    split["cpu_outside_torch"] = cpu_outside_torch(rows, int(split["served"]["images"]))
    Path(sys.argv[2]).write_text(json.dumps(split, indent=1))
    print(markdown(rows))
    print("CPU ms per image outside torch:", split["cpu_outside_torch"])


if __name__ == "__main__":
    main()
