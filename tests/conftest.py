"""Suite-wide setup: tiers marked by folder, an isolated cache, and the S3 test server."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from serve_app.launcher import apply_defaults, private_haproxy_ports
from tests.support.s3server import FOREIGN_AWS_ENV, TEST_AWS_ENV, MotoServer

# Ray's serving-path switches as the app ships them (HAProxy, throughput-optimized
# Serve), before anything imports ray.serve; every Ray the suite starts inherits them.
# HAProxy's own listeners get free ports: a developer's server may hold Ray's fixed ones.
apply_defaults()
private_haproxy_ports()

# Built-in models and stored images go to a throwaway folder, never the user's cache.
# Set before anything starts Ray, so replicas inherit it.
os.environ.setdefault("IMAGEGEN_CACHE", tempfile.mkdtemp(prefix="imagegen-test-cache-"))
# S3 credentials come from the environment, as in production; these only open moto.
for _name in FOREIGN_AWS_ENV:
    os.environ.pop(_name, None)
os.environ.update(TEST_AWS_ENV)

TIERS = {"integration": pytest.mark.integration, "gpu": pytest.mark.gpu}
TEST_BUCKET = "imagegen-test"


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        tier = Path(str(item.fspath)).parent.name
        if tier in TIERS:
            item.add_marker(TIERS[tier])


@pytest.fixture(scope="session")
def s3_endpoint() -> Iterator[str]:
    """A real S3-compatible server process for the whole session."""
    server = MotoServer()
    try:
        yield server.start()
    finally:
        server.stop()


def s3_client(endpoint: str) -> Any:
    import boto3

    return boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1")


@pytest.fixture(scope="session")
def s3_bucket(s3_endpoint: str) -> str:
    s3_client(s3_endpoint).create_bucket(Bucket=TEST_BUCKET)
    return TEST_BUCKET
