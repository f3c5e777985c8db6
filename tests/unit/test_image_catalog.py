"""Imagine Image objects in the store, on both backends: records, listing, publishing, owners."""

from __future__ import annotations

import time

import pytest

from storage.base import ImageStore
from storage.catalog import (
    IMAGE_ID_RE,
    ImageCatalog,
    ImageRecord,
    id_created_ms,
    iso_utc,
    new_image_id,
)
from tests.unit.conftest import Backend


def make_image(
    catalog: ImageCatalog, owner: str, name: str, now_ms: int, data: bytes = b"img"
) -> ImageRecord:
    image_id = new_image_id(now_ms)
    record = ImageRecord(
        id=image_id,
        owner=owner,
        name=name,
        width=64,
        height=64,
        format="png",
        size=len(data),
        created_at=iso_utc(now_ms),
        seed=1,
        model="tiny",
    )
    catalog.store.put(record.data_key, data, "image/png")
    catalog.save(record)
    return record


@pytest.fixture
def catalog(store: ImageStore) -> ImageCatalog:
    return ImageCatalog(store)


def test_ids_are_unguessable_and_encode_their_time() -> None:
    ids = {new_image_id(1_700_000_000_000) for _ in range(500)}
    assert len(ids) == 500
    assert all(IMAGE_ID_RE.match(i) for i in ids)
    assert {id_created_ms(i) for i in ids} == {1_700_000_000_000}
    assert new_image_id(2_000) < new_image_id(1_000)  # newer sorts first
    assert iso_utc(1_700_000_000_123) == "2023-11-14T22:13:20.123Z"


def test_save_get_and_bytes(catalog: ImageCatalog) -> None:
    record = make_image(catalog, "default", "cat", 1_000, b"cat-bytes")
    assert catalog.get("default", record.id) == record
    assert catalog.read(record) == b"cat-bytes"
    assert catalog.get("default", "image_nope") is None
    assert catalog.get("default", "../../etc/passwd") is None


def test_list_is_newest_first_and_paginates(catalog: ImageCatalog) -> None:
    made = [make_image(catalog, "default", f"n{i}", 1_000 + i) for i in range(5)]
    newest_first = [r.id for r in reversed(made)]
    page, more = catalog.list("default", limit=2)
    assert [r.id for r in page] == newest_first[:2] and more
    page, more = catalog.list("default", limit=2, after=page[-1].id)
    assert [r.id for r in page] == newest_first[2:4] and more
    page, more = catalog.list("default", limit=2, after=page[-1].id)
    assert [r.id for r in page] == newest_first[4:] and not more
    page, more = catalog.list("default", limit=10)
    assert len(page) == 5 and not more


def test_list_filters_by_exact_name(catalog: ImageCatalog) -> None:
    cats = [make_image(catalog, "default", "cat", 1_000 + i) for i in range(3)]
    for i in range(4):
        make_image(catalog, "default", "dog" if i % 2 else "cats", 2_000 + i)
    page, more = catalog.list("default", limit=2, name="cat")
    assert [r.id for r in page] == [cats[2].id, cats[1].id] and more
    page, more = catalog.list("default", limit=2, name="cat", after=page[-1].id)
    assert [r.id for r in page] == [cats[0].id] and not more
    assert catalog.list("default", limit=5, name="bird") == ([], False)


def test_owners_see_only_their_own_images(catalog: ImageCatalog) -> None:
    mine = make_image(catalog, "alice", "x", 1_000)
    theirs = make_image(catalog, "bob", "x", 1_001)
    assert [r.id for r in catalog.list("alice", limit=10)[0]] == [mine.id]
    assert catalog.get("alice", theirs.id) is None
    assert catalog.get("bob", theirs.id) == theirs
    with pytest.raises(ValueError):
        catalog.list("../alice", limit=10)


def test_publish_then_unpublish(backend: Backend, catalog: ImageCatalog) -> None:
    record = make_image(catalog, "default", "cat", int(time.time() * 1000), b"pixels")
    published = catalog.publish(record)
    assert published is not None and published.public_name
    assert catalog.publish(published) == published  # idempotent: the URL stays stable
    assert catalog.get("default", record.id) == published
    assert catalog.read_public(published.public_name) == b"pixels"
    private = catalog.unpublish(published)
    assert private.public_token is None and catalog.get("default", record.id) == private
    assert catalog.read_public(published.public_name) is None
    again = catalog.publish(private)
    assert again is not None and again.public_name != published.public_name


@pytest.mark.parametrize("name", ["../x.png", "x.exe", "x", "a/b.png", ""])
def test_public_names_cannot_escape(catalog: ImageCatalog, name: str) -> None:
    assert catalog.read_public(name) is None


def test_delete_removes_record_bytes_and_public_copy(catalog: ImageCatalog) -> None:
    record = catalog.publish(make_image(catalog, "default", "cat", 1_000))
    assert record is not None and record.public_name
    catalog.delete(record)
    assert catalog.get("default", record.id) is None
    assert catalog.read(record) is None and catalog.read_public(record.public_name) is None
    assert catalog.list("default", limit=10) == ([], False)
    catalog.delete(record)  # retrying a delete is harmless
