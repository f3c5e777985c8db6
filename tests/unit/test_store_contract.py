"""One contract for every ``ImageStore`` backend: the same tests run on local and S3."""

from __future__ import annotations

import time
from urllib.parse import parse_qs, urlsplit

import pytest

from storage.base import ImageStore, output_key
from tests.unit.conftest import Backend


def test_put_get_head_delete(store: ImageStore) -> None:
    key = "outputs/abcdefghijklmnop.png"
    store.put(key, b"png-bytes", "image/png", {"request-id": "r1"})
    assert store.get(key) == b"png-bytes"
    info = store.head(key)
    assert info is not None
    assert (info.key, info.size, info.content_type) == (key, 9, "image/png")
    assert info.metadata == {"request-id": "r1"}
    assert info.last_modified > 0
    store.delete(key)
    assert store.get(key) is None and store.head(key) is None
    store.delete(key)  # deleting again is not an error


def test_put_replaces_bytes_and_metadata(store: ImageStore) -> None:
    store.put("images/o/meta/x.json", b"{}", "application/json", {"v": "1"})
    store.put("images/o/meta/x.json", b'{"a":1}', "application/json")
    assert store.get("images/o/meta/x.json") == b'{"a":1}'
    info = store.head("images/o/meta/x.json")
    assert info is not None and info.metadata == {} and info.size == 7


def test_missing_objects_are_none(store: ImageStore) -> None:
    assert store.get("outputs/nothing-here.png") is None
    assert store.head("outputs/nothing-here.png") is None


@pytest.mark.parametrize(
    "key",
    ["../etc/passwd", "/abs.png", "a//b.png", "a/../b.png", "a/./b.png", "", "x.PNG", "sp ace"],
)
def test_invalid_keys_are_refused(store: ImageStore, key: str) -> None:
    with pytest.raises(ValueError):
        store.put(key, b"x", "image/png")
    assert store.get(key) is None and store.head(key) is None
    store.delete(key)  # a no-op, never an error or a filesystem access


@pytest.mark.parametrize("metadata", [{"Upper": "x"}, {"ok": "naïve"}, {"a b": "x"}])
def test_metadata_is_s3_shaped_on_every_backend(store: ImageStore, metadata: dict) -> None:
    with pytest.raises(ValueError):
        store.put("outputs/k.png", b"x", "image/png", metadata)


def test_list_is_sorted_by_key_and_paginates(store: ImageStore) -> None:
    keys = [f"images/o/meta/{name}.json" for name in ("c", "a", "e", "b", "d")]
    for key in keys:
        store.put(key, b"{}", "application/json")
    store.put("images/other/meta/z.json", b"{}", "application/json")
    store.put("images/o/data/a.png", b"x", "image/png")
    assert store.list("images/o/meta/") == sorted(keys)
    assert store.list("images/o/meta/", limit=2) == sorted(keys)[:2]
    after_b = store.list("images/o/meta/", start_after="images/o/meta/b.json", limit=2)
    assert after_b == ["images/o/meta/c.json", "images/o/meta/d.json"]
    assert store.list("images/o/meta/", start_after="images/o/meta/e.json") == []
    assert store.list("images/nobody/") == []
    assert len(store.list("images/")) == 7


def test_list_refuses_bad_prefixes(store: ImageStore) -> None:
    with pytest.raises(ValueError):
        store.list("../")


def test_output_keys_are_unguessable_and_distinct() -> None:
    keys = {output_key("webp") for _ in range(200)}
    assert len(keys) == 200
    assert all(k.startswith("outputs/") and len(k.split("/")[1].split(".")[0]) >= 32 for k in keys)


def test_presigned_url_serves_the_bytes_without_credentials(backend: Backend) -> None:
    key = output_key("png")
    backend.store.put(key, b"\x89PNG-bytes", "image/png")
    url = backend.store.presign(key, 120, base_url="http://testserver/")
    response = backend.fetch(url)
    assert response.status_code == 200
    assert response.content == b"\x89PNG-bytes"
    assert response.headers["content-type"] == "image/png"


def test_presigned_url_names_its_expiry(backend: Backend) -> None:
    key = output_key("png")
    backend.store.put(key, b"x", "image/png")
    query = parse_qs(urlsplit(backend.store.presign(key, 77, "http://testserver")).query)
    if backend.store.kind == "s3":
        assert query["X-Amz-Expires"] == ["77"]
        assert query["X-Amz-Algorithm"] == ["AWS4-HMAC-SHA256"]
        assert len(query["X-Amz-Signature"][0]) == 64
    else:
        assert 70 <= int(query["expires"][0]) - time.time() <= 78
        assert len(query["signature"][0]) == 64


def test_conditional_writes_let_exactly_one_writer_win(store: ImageStore) -> None:
    key = "jobs/o/records/cas.json"
    first = store.put_if(key, b'{"v":1}', "application/json", None)
    assert first is not None
    assert store.put_if(key, b'{"v":9}', "application/json", None) is None  # create-only
    found = store.get_versioned(key)
    assert found is not None and (found.data, found.etag) == (b'{"v":1}', first)
    second = store.put_if(key, b'{"v":2}', "application/json", first)
    assert second is not None and second != first
    # A writer still holding the first version loses, and writes nothing.
    assert store.put_if(key, b'{"v":3}', "application/json", first) is None
    assert store.get(key) == b'{"v":2}'
    store.delete(key)
    assert store.put_if(key, b'{"v":4}', "application/json", second) is None
    assert store.get_versioned(key) is None
