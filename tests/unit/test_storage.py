"""Local image store and signed, expiring URLs."""

from __future__ import annotations

from pathlib import Path
from urllib.parse import parse_qs, urlparse

import pytest

from deployments.storage import FILES_ROUTE, LocalImageStore, UrlSigner

SECRET = "k" * 32


@pytest.fixture
def store(tmp_path: Path) -> LocalImageStore:
    return LocalImageStore(tmp_path, UrlSigner(SECRET, ttl_s=60))


def test_put_get_delete(store: LocalImageStore) -> None:
    key = store.put(b"png-bytes", "png")
    assert key.endswith(".png") and store.valid_key(key)
    assert store.get(key) == b"png-bytes"
    store.delete(key)
    assert store.get(key) is None


def test_keys_are_unguessable_and_distinct(store: LocalImageStore) -> None:
    keys = {store.put(b"x", "webp") for _ in range(50)}
    assert len(keys) == 50
    assert all(len(k.split(".")[0]) >= 32 for k in keys)


@pytest.mark.parametrize("key", ["../etc/passwd", "a/b.png", "short.png", "x" * 40 + ".exe", ""])
def test_bad_keys_never_touch_the_filesystem(store: LocalImageStore, key: str) -> None:
    assert not store.valid_key(key)
    assert store.get(key) is None


def test_url_carries_a_valid_signature(store: LocalImageStore) -> None:
    key = store.put(b"x", "png")
    url = urlparse(store.url_for(key, "http://host:8000/"))
    assert url.path == f"{FILES_ROUTE}/{key}"
    query = {k: v[0] for k, v in parse_qs(url.query).items()}
    assert store.signer.verify(key, query["expires"], query["signature"]) == ""


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
