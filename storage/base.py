"""The ``ImageStore`` protocol every backend implements, and the key layout shared by all.

Keys are relative, ``/``-separated paths such as ``outputs/<random>.png``. Every
backend validates them with the same pattern: segments of ``[A-Za-z0-9_-]`` and
one optional lowercase extension, so ``..``, absolute paths and empty segments
can never reach a filesystem or a bucket.

Layout (relative to the backend's root or bucket prefix):

- ``outputs/<random>.<ext>``: ``response_format=url`` images; they expire.
- ``images/<owner>/data/<image id>.<ext>``: imagine image bytes.
- ``images/<owner>/meta/<image id>.json``: the imagine Image record, next to its bytes.
- ``public/<token>.<ext>``: copies of published imagine images.
"""

from __future__ import annotations

import re
import secrets
from dataclasses import dataclass, field
from typing import Protocol

from common.formats import CONTENT_TYPES

OUTPUTS_PREFIX = "outputs/"
PUBLIC_PREFIX = "public/"
IMAGES_PREFIX = "images/"
JOBS_PREFIX = "jobs/"
JSON_CONTENT_TYPE = "application/json"

_SEGMENT = r"[A-Za-z0-9_-]{1,128}"
_KEY_RE = re.compile(rf"^(?:{_SEGMENT}/){{0,7}}{_SEGMENT}(?:\.[a-z0-9]{{1,8}})?$")
_PREFIX_RE = re.compile(rf"^(?:{_SEGMENT}/){{0,8}}$")
_META_NAME_RE = re.compile(r"^[a-z0-9-]{1,64}$")
_OWNER_RE = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
IMAGE_EXTENSIONS = tuple(CONTENT_TYPES)


@dataclass(frozen=True)
class ObjectInfo:
    """What ``head`` reports about one stored object."""

    key: str
    size: int
    content_type: str
    last_modified: float
    metadata: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class Versioned:
    """An object's bytes and the version tag (S3's ``ETag``) a conditional write names."""

    data: bytes
    etag: str


class ImageStore(Protocol):
    """Bytes under keys, with a content type and small string metadata per object."""

    kind: str

    def put(
        self, key: str, data: bytes, content_type: str, metadata: dict[str, str] | None = None
    ) -> None:
        """Store ``data`` at ``key`` (replacing it), atomically for readers."""
        ...

    def get(self, key: str) -> bytes | None:
        """The object's bytes; ``None`` if it does not exist or the key is invalid."""
        ...

    def head(self, key: str) -> ObjectInfo | None:
        """Size, content type and metadata without the bytes; ``None`` if absent."""
        ...

    def delete(self, key: str) -> None:
        """Remove the object; deleting a missing object is not an error."""
        ...

    def list(self, prefix: str, start_after: str | None = None, limit: int = 1000) -> list[str]:
        """Keys under ``prefix``, ascending, strictly after ``start_after``, at most ``limit``."""
        ...

    def presign(self, key: str, ttl_s: int, base_url: str | None = None) -> str:
        """A URL that fetches ``key`` without credentials until ``ttl_s`` from now."""
        ...

    def get_versioned(self, key: str) -> Versioned | None:
        """The bytes with their version tag; ``None`` if absent or the key is invalid."""
        ...

    def put_if(self, key: str, data: bytes, content_type: str, if_match: str | None) -> str | None:
        """Compare-and-swap: write only if the object's tag is still ``if_match`` (or, with
        ``None``, only if no object exists). -> the new tag, or ``None`` if another
        writer got there first (nothing was written)."""
        ...


def valid_key(key: str) -> bool:
    return bool(_KEY_RE.match(key))


def check_key(key: str) -> str:
    if not valid_key(key):
        raise ValueError(f"invalid storage key {key!r}")
    return key


def check_prefix(prefix: str) -> str:
    """A list prefix: empty, or whole segments ending in ``/``."""
    if not _PREFIX_RE.match(prefix):
        raise ValueError(f"invalid storage prefix {prefix!r}")
    return prefix


def check_metadata(metadata: dict[str, str] | None) -> dict[str, str]:
    """Lowercase names and ASCII values: what S3 user metadata carries on every backend."""
    metadata = metadata or {}
    for name, value in metadata.items():
        if not _META_NAME_RE.match(name):
            raise ValueError(f"invalid metadata name {name!r}")
        if not value.isascii() or len(value) > 1024:
            raise ValueError(f"metadata {name!r} must be ASCII and at most 1024 characters")
    return metadata


def is_image_key(key: str) -> bool:
    return valid_key(key) and "." in key and key.rsplit(".", 1)[1] in IMAGE_EXTENSIONS


def content_type_for(key: str) -> str:
    return CONTENT_TYPES[key.rsplit(".", 1)[-1]]


def random_token() -> str:
    """192 random bits, URL-safe: unguessable names for outputs and public copies."""
    return secrets.token_urlsafe(24)


def output_key(extension: str) -> str:
    if extension not in CONTENT_TYPES:
        raise ValueError(f"unsupported extension {extension!r}")
    return f"{OUTPUTS_PREFIX}{random_token()}.{extension}"


def check_owner(owner: str) -> str:
    if not _OWNER_RE.match(owner):
        raise ValueError(f"invalid owner id {owner!r}")
    return owner


def image_data_key(owner: str, image_id: str, extension: str) -> str:
    return check_key(f"{IMAGES_PREFIX}{check_owner(owner)}/data/{image_id}.{extension}")


def image_record_prefix(owner: str) -> str:
    return f"{IMAGES_PREFIX}{check_owner(owner)}/meta/"


def image_record_key(owner: str, image_id: str) -> str:
    return check_key(f"{image_record_prefix(owner)}{image_id}.json")


def public_key(token: str, extension: str) -> str:
    return check_key(f"{PUBLIC_PREFIX}{token}.{extension}")
