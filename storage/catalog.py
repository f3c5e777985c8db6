"""Imagine Image objects kept in the image store itself: no second database.

Each image is two objects under its owner: the bytes (``images/<owner>/data/<id>.<ext>``,
written by the encoder) and a JSON record next to them (``images/<owner>/meta/<id>.json``).
Every ingress replica reads the same store, so they all see the same state.

Ids are ``image_`` + 11 hex digits of *inverted* creation time in milliseconds + 26
base32 characters (130 random bits). The random part makes them unguessable; the time
part makes the store's ascending key order newest-first, so a page of the list is one
store listing plus one read per image. Filtering by name reads records until the
page is full (a scan of the owner's images in the worst case).

Publishing copies the bytes to ``public/<random token>.<ext>``, which anyone may
fetch; unpublishing deletes that copy first, so the public URL stops working at once.
"""

from __future__ import annotations

import base64
import re
import secrets
import time
from datetime import UTC, datetime

from pydantic import BaseModel, ConfigDict

from common.formats import CONTENT_TYPES
from storage.base import (
    JSON_CONTENT_TYPE,
    ImageStore,
    check_owner,
    image_data_key,
    image_record_key,
    image_record_prefix,
    public_key,
    random_token,
)

ID_PREFIX = "image_"
IMAGE_ID_RE = re.compile(r"^image_[0-9a-f]{11}[a-z2-7]{26}$")
_TIME_LIMIT_MS = (1 << 44) - 1  # year 2527
_LIST_CHUNK = 200


def new_image_id(now_ms: int | None = None) -> str:
    now_ms = int(time.time() * 1000) if now_ms is None else now_ms
    random_part = base64.b32encode(secrets.token_bytes(17)).decode("ascii").lower()[:26]
    return f"{ID_PREFIX}{_TIME_LIMIT_MS - now_ms:011x}{random_part}"


def id_created_ms(image_id: str) -> int:
    """The creation time an id encodes, in epoch milliseconds."""
    return _TIME_LIMIT_MS - int(image_id[len(ID_PREFIX) : len(ID_PREFIX) + 11], 16)


def iso_utc(epoch_ms: int) -> str:
    stamp = datetime.fromtimestamp(epoch_ms / 1000, UTC).isoformat(timespec="milliseconds")
    return stamp.replace("+00:00", "Z")


class ImageRecord(BaseModel):
    """The stored record; unknown keys from newer versions are ignored on read."""

    model_config = ConfigDict(extra="ignore")

    id: str
    owner: str
    name: str
    width: int
    height: int
    format: str
    size: int
    created_at: str
    seed: int | None = None
    model: str | None = None
    public_token: str | None = None

    @property
    def data_key(self) -> str:
        return image_data_key(self.owner, self.id, self.format)

    @property
    def public_name(self) -> str | None:
        """``<token>.<ext>`` under ``public/`` while published, else ``None``."""
        return f"{self.public_token}.{self.format}" if self.public_token else None


class ImageCatalog:
    """Create, read, list, publish and delete Image objects in one store."""

    def __init__(self, store: ImageStore) -> None:
        self.store = store

    @staticmethod
    def valid_id(image_id: str) -> bool:
        return bool(IMAGE_ID_RE.match(image_id))

    def save(self, record: ImageRecord) -> None:
        self.store.put(
            image_record_key(record.owner, record.id),
            record.model_dump_json().encode(),
            JSON_CONTENT_TYPE,
        )

    def get(self, owner: str, image_id: str) -> ImageRecord | None:
        if not self.valid_id(image_id):
            return None
        return self._load(image_record_key(check_owner(owner), image_id))

    def _load(self, key: str) -> ImageRecord | None:
        raw = self.store.get(key)
        return None if raw is None else ImageRecord.model_validate_json(raw)

    def list(
        self, owner: str, limit: int, after: str | None = None, name: str | None = None
    ) -> tuple[list[ImageRecord], bool]:
        """Newest first: up to ``limit`` records older than ``after``, and whether more exist."""
        prefix = image_record_prefix(owner)
        cursor = image_record_key(owner, after) if after else None
        chunk = limit + 1 if name is None else max(limit + 1, _LIST_CHUNK)
        found: list[ImageRecord] = []
        while True:
            keys = self.store.list(prefix, start_after=cursor, limit=chunk)
            for key in keys:
                record = self._load(key)  # None: deleted since the listing
                if record is not None and (name is None or record.name == name):
                    found.append(record)
                    if len(found) > limit:
                        return found[:limit], True
            if len(keys) < chunk:
                return found, False
            cursor = keys[-1]

    def read(self, record: ImageRecord) -> bytes | None:
        return self.store.get(record.data_key)

    def read_public(self, public_name: str) -> bytes | None:
        token, _, extension = public_name.partition(".")
        if extension not in CONTENT_TYPES:
            return None
        try:
            return self.store.get(public_key(token, extension))
        except ValueError:
            return None

    def publish(self, record: ImageRecord) -> ImageRecord | None:
        """Copy the bytes to a public key; idempotent. ``None`` if the bytes are gone."""
        if record.public_token:
            return record
        data = self.read(record)
        if data is None:
            return None
        token = random_token()
        self.store.put(
            public_key(token, record.format),
            data,
            CONTENT_TYPES[record.format],
            {"image-id": record.id},
        )
        published = record.model_copy(update={"public_token": token})
        self.save(published)
        return published

    def unpublish(self, record: ImageRecord) -> ImageRecord:
        if record.public_token is None:
            return record
        # Delete the public copy first: the URL stops working before the record says so.
        self.store.delete(public_key(record.public_token, record.format))
        private = record.model_copy(update={"public_token": None})
        self.save(private)
        return private

    def delete(self, record: ImageRecord) -> None:
        """Public copy, bytes, then the record: a failed delete can simply be retried."""
        if record.public_token:
            self.store.delete(public_key(record.public_token, record.format))
        self.store.delete(record.data_key)
        self.store.delete(image_record_key(record.owner, record.id))
