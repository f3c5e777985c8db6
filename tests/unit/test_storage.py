"""The local store's own duties: signed, expiring URLs, the sweeper, and the filesystem."""

from __future__ import annotations

import os
import time
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import pytest

from common.config import StorageConfig
from storage.base import output_key
from storage.factory import make_store, start_expiry
from storage.local import FILES_ROUTE, LocalImageStore, Sweeper
from storage.signing import UrlSigner
from tests.unit.conftest import local_backend

SECRET = "k" * 32


@pytest.fixture
def store(tmp_path: Path) -> LocalImageStore:
    return LocalImageStore(tmp_path, UrlSigner(SECRET, ttl_s=60))


def test_factory_builds_the_local_default(tmp_path: Path) -> None:
    store = make_store(StorageConfig(local_dir=str(tmp_path)), SECRET)
    assert isinstance(store, LocalImageStore) and store.root == tmp_path.resolve()


def test_url_points_at_the_files_route_with_a_valid_signature(store: LocalImageStore) -> None:
    key = output_key("png")
    url = urlsplit(store.presign(key, 60, "http://host:8000/"))
    assert url.path == f"{FILES_ROUTE}/{key}"
    query = {k: v[0] for k, v in parse_qs(url.query).items()}
    assert store.signer.verify(key, query["expires"], query["signature"]) == ""


def test_presign_needs_the_ingress_base_url(store: LocalImageStore) -> None:
    with pytest.raises(ValueError, match="base_url"):
        store.presign(output_key("png"), 60)


def test_signature_rejects_tampering_and_expiry() -> None:
    signer = UrlSigner(SECRET, ttl_s=60)
    signed = signer.sign("abc.png", now=1000.0)
    assert signed["expires"] == "1060"
    assert signer.verify("abc.png", signed["expires"], signed["signature"], now=1059.0) == ""
    assert signer.verify("abc.png", signed["expires"], signed["signature"], now=1061.0) == "expired"
    assert (
        signer.verify("abd.png", signed["expires"], signed["signature"], now=1000.0)
        == "bad signature"
    )
    assert signer.verify("abc.png", "1999", signed["signature"], now=1000.0) == "bad signature"
    assert signer.verify("abc.png", "soon", signed["signature"], now=1000.0) == "malformed expiry"
    other = UrlSigner("z" * 32, ttl_s=60)
    assert (
        other.verify("abc.png", signed["expires"], signed["signature"], now=1000.0)
        == "bad signature"
    )


def test_short_signing_keys_are_refused() -> None:
    with pytest.raises(ValueError, match="16"):
        UrlSigner("short", ttl_s=60)


def test_expired_and_tampered_urls_are_refused_over_http(tmp_path: Path) -> None:
    backend = local_backend(tmp_path)
    secret, other = output_key("png"), output_key("png")
    backend.store.put(secret, b"secret", "image/png")
    backend.store.put(other, b"other", "image/png")
    url = backend.store.presign(other, 60, "http://testserver")
    assert backend.fetch(url).content == b"other"
    swapped = backend.fetch(url.replace(other.split("/")[1], secret.split("/")[1]))
    assert swapped.status_code == 403 and swapped.json()["error"]["code"] == "invalid_url"
    expired = backend.store.presign(other, -1, "http://testserver")  # signed, but already past
    response = backend.fetch(expired)
    assert response.status_code == 403 and "expired" in response.json()["error"]["message"]


def test_files_are_written_under_the_root_only(store: LocalImageStore, tmp_path: Path) -> None:
    store.put("images/o/data/a.png", b"x", "image/png", {"image-id": "a"})
    assert (tmp_path / "images/o/data/a.png").read_bytes() == b"x"
    assert not list(tmp_path.glob("**/*.tmp"))  # staging files are renamed away
    assert store.list("") == ["images/o/data/a.png"]  # the metadata sidecars are not objects


def test_sweep_deletes_only_expired_outputs(store: LocalImageStore) -> None:
    old, fresh = output_key("png"), output_key("webp")
    store.put(old, b"old", "image/png")
    store.put(fresh, b"new", "image/webp")
    store.put("images/o/data/keep.png", b"kept", "image/png")
    hour_ago = time.time() - 3600
    os.utime(store.root / old, (hour_ago, hour_ago))
    os.utime(store.root / "images/o/data/keep.png", (hour_ago, hour_ago))
    assert store.sweep("outputs/", max_age_s=60) == 1
    assert store.get(old) is None and store.head(old) is None
    assert store.get(fresh) == b"new"
    assert store.get("images/o/data/keep.png") == b"kept"  # imagine images never expire


def test_sweeper_thread_runs_until_stopped(store: LocalImageStore) -> None:
    key = output_key("png")
    store.put(key, b"x", "image/png")
    past = time.time() - 10
    os.utime(store.root / key, (past, past))
    sweeper = Sweeper(store, "outputs/", max_age_s=1, interval_s=0.05).start()
    try:
        deadline = time.monotonic() + 30
        while store.get(key) is not None and time.monotonic() < deadline:
            time.sleep(0.05)
        assert store.get(key) is None
    finally:
        sweeper.stop()
    assert not sweeper._thread.is_alive()


def test_start_expiry_sweeps_local_outputs_with_the_url_ttl(tmp_path: Path) -> None:
    config = StorageConfig(local_dir=str(tmp_path), url_ttl_s=90, sweep_interval_s=3600)
    store = make_store(config, SECRET)
    sweeper = start_expiry(store, config)
    assert sweeper is not None
    try:
        assert (sweeper.max_age_s, sweeper.prefix) == (90, "outputs/")
    finally:
        sweeper.stop()
    assert not sweeper._thread.is_alive()


@pytest.mark.parametrize("key", ["../../etc/passwd", "outputs/../../x.png", "..", "a/.meta/x"])
def test_traversal_never_reaches_the_filesystem(store: LocalImageStore, key: str) -> None:
    assert store.get(key) is None
    with pytest.raises(ValueError):
        store.put(key, b"x", "image/png")


@pytest.mark.parametrize(
    "kind,nodes,refused", [("local", 1, False), ("local", 3, True), ("s3", 3, False)]
)
def test_a_local_store_is_refused_on_more_than_one_node(
    kind: str, nodes: int, refused: bool
) -> None:
    from common.config import StorageConfig
    from storage.factory import check_store_fits_cluster

    config = StorageConfig.model_validate(
        {"kind": kind, "bucket": "imagegen-bucket"} if kind == "s3" else {"kind": kind}
    )
    if not refused:
        check_store_fits_cluster(config, nodes)
        return
    with pytest.raises(ValueError, match="storage.kind: s3"):
        check_store_fits_cluster(config, nodes)
