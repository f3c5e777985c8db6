"""A real S3-compatible server for the tests: ``moto_server`` in its own process.

Started on a free loopback port, polled until it answers HTTP, and stopped by PID
(terminate, then kill) at teardown. It speaks the S3 REST API over HTTP, so boto3
and plain HTTP clients reach it exactly as they would reach S3 or MinIO.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

# Fixed test credentials: replicas inherit them from the environment, like a secret.
TEST_AWS_ENV = {
    "AWS_ACCESS_KEY_ID": "imagegen-test-key",
    "AWS_SECRET_ACCESS_KEY": "imagegen-test-secret",
    "AWS_DEFAULT_REGION": "us-east-1",
    "AWS_EC2_METADATA_DISABLED": "true",
}
# Anything that could point boto3 at real AWS credentials during the tests.
FOREIGN_AWS_ENV = (
    "AWS_PROFILE",
    "AWS_SESSION_TOKEN",
    "AWS_SECURITY_TOKEN",
    "AWS_ROLE_ARN",
    "AWS_WEB_IDENTITY_TOKEN_FILE",
    "AWS_CONFIG_FILE",
    "AWS_SHARED_CREDENTIALS_FILE",
    "AWS_ENDPOINT_URL",
    "AWS_ENDPOINT_URL_S3",
)
START_TIMEOUT_S = 60.0


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def moto_server_command() -> list[str]:
    beside = Path(sys.executable).parent / "moto_server"
    found = str(beside) if beside.exists() else shutil.which("moto_server")
    if found is None:
        raise RuntimeError("moto_server is not installed; pip install -e '.[test]'")
    return [found]


class MotoServer:
    """One ``moto_server`` process; ``endpoint`` is its ``http://127.0.0.1:PORT``."""

    def __init__(self) -> None:
        self.process: subprocess.Popen[bytes] | None = None
        self.endpoint = ""
        fd, path = tempfile.mkstemp(prefix="moto-", suffix=".log")
        os.close(fd)
        self.log_path = Path(path)

    def start(self, attempts: int = 3) -> str:
        for _ in range(attempts):  # a free port can be taken before the server binds it
            port = free_port()
            with self.log_path.open("ab") as log:  # the child keeps its own copy
                self.process = subprocess.Popen(
                    [*moto_server_command(), "-H", "127.0.0.1", "-p", str(port)],
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    stdin=subprocess.DEVNULL,
                )
            self.endpoint = f"http://127.0.0.1:{port}"
            if self._wait_ready():
                return self.endpoint
            self.stop()
        log = self.log_path.read_text(errors="replace")[-2000:]
        raise RuntimeError(f"moto_server did not start; its log ends with:\n{log}")

    def _wait_ready(self) -> bool:
        deadline = time.monotonic() + START_TIMEOUT_S
        while time.monotonic() < deadline:
            if self.process is None or self.process.poll() is not None:
                return False
            try:
                httpx.get(self.endpoint, timeout=2)
                return True
            except httpx.TransportError:
                time.sleep(0.1)
        return False

    def stop(self) -> None:
        process, self.process = self.process, None
        if process is None or process.poll() is not None:
            return
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=10)
