"""The local-directory store: the default, for a single node.

Objects are files under ``root/<key>``; content type and metadata sit in a small
JSON sidecar under ``root/.meta/<key>.json`` (``.meta`` can never be a key segment).
Writes go to a hidden staging file first and are renamed into place, so readers
never see half an image. URLs point at the ingress's ``/v1/images/files/`` route
and carry an HMAC over key and expiry; a :class:`Sweeper` deletes expired outputs.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import logging
import os
import secrets
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlencode

from common.paths import default_cache_root
from storage.base import (
    ObjectInfo,
    Versioned,
    check_key,
    check_metadata,
    check_prefix,
    valid_key,
)
from storage.signing import UrlSigner

logger = logging.getLogger("imagegen.storage")

FILES_ROUTE = "/v1/images/files"
_META_DIR = ".meta"
_LOCK_DIR = ".locks"


def etag_of(data: bytes) -> str:
    """The local store's version tag: a digest of the bytes, as S3's ETag is for a PUT."""
    return hashlib.sha256(data).hexdigest()[:32]


class LocalImageStore:
    """Files in one local folder."""

    kind = "local"

    def __init__(self, root: str | Path | None, signer: UrlSigner) -> None:
        self.root = (Path(root) if root else default_cache_root() / "images").resolve()
        self.root.mkdir(parents=True, exist_ok=True)
        self.signer = signer

    def _path(self, key: str) -> Path:
        path = (self.root / check_key(key)).resolve()
        if not path.is_relative_to(self.root):  # defence in depth; the key pattern forbids it
            raise ValueError(f"invalid storage key {key!r}")
        return path

    def _meta_path(self, key: str) -> Path:
        return self.root / _META_DIR / f"{check_key(key)}.json"

    @staticmethod
    def _write_atomically(path: Path, data: bytes) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        staging = path.with_name(f".{path.name}.{secrets.token_hex(4)}.tmp")
        try:
            staging.write_bytes(data)
            staging.replace(path)
        finally:
            staging.unlink(missing_ok=True)

    def put(
        self, key: str, data: bytes, content_type: str, metadata: dict[str, str] | None = None
    ) -> None:
        path = self._path(key)
        sidecar = {"content_type": content_type, "metadata": check_metadata(metadata)}
        # Sidecar first: an object that exists always has its metadata.
        self._write_atomically(self._meta_path(key), json.dumps(sidecar).encode())
        self._write_atomically(path, data)

    def get(self, key: str) -> bytes | None:
        if not valid_key(key):
            return None
        try:
            return self._path(key).read_bytes()
        except (FileNotFoundError, IsADirectoryError, NotADirectoryError):
            return None

    def head(self, key: str) -> ObjectInfo | None:
        if not valid_key(key):
            return None
        path = self._path(key)
        if not path.is_file():
            return None
        try:
            stat = path.stat()
            sidecar = json.loads(self._meta_path(key).read_bytes())
        except (FileNotFoundError, NotADirectoryError):
            return None
        return ObjectInfo(
            key=key,
            size=stat.st_size,
            content_type=sidecar["content_type"],
            last_modified=stat.st_mtime,
            metadata=dict(sidecar["metadata"]),
        )

    def get_versioned(self, key: str) -> Versioned | None:
        data = self.get(key)
        return None if data is None else Versioned(data, etag_of(data))

    @contextlib.contextmanager
    def _locked(self, key: str) -> Iterator[None]:
        """An exclusive ``flock`` per key: conditional writes from every process on this
        node are serialised (the local store is one node's, see ``storage.factory``)."""
        lock = self.root / _LOCK_DIR / f"{check_key(key)}.lock"
        lock.parent.mkdir(parents=True, exist_ok=True)
        with lock.open("a") as handle:
            fcntl.flock(handle, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(handle, fcntl.LOCK_UN)

    def put_if(self, key: str, data: bytes, content_type: str, if_match: str | None) -> str | None:
        """Compare the current digest with ``if_match`` under the key's lock, then write by
        an atomic rename; a create (``if_match=None``) links the staged file in, which
        fails if the object exists."""
        path = self._path(key)
        with self._locked(key):
            if if_match is None:
                return self._create(key, path, data, content_type)
            try:
                current = path.read_bytes()
            except (FileNotFoundError, NotADirectoryError):
                return None
            if etag_of(current) != if_match:
                return None
            self.put(key, data, content_type)
        return etag_of(data)

    def _create(self, key: str, path: Path, data: bytes, content_type: str) -> str | None:
        sidecar = {"content_type": content_type, "metadata": {}}
        self._write_atomically(self._meta_path(key), json.dumps(sidecar).encode())
        path.parent.mkdir(parents=True, exist_ok=True)
        staging = path.with_name(f".{path.name}.{secrets.token_hex(4)}.tmp")
        try:
            staging.write_bytes(data)
            os.link(staging, path)
        except FileExistsError:
            return None
        finally:
            staging.unlink(missing_ok=True)
        return etag_of(data)

    def delete(self, key: str) -> None:
        if not valid_key(key):
            return
        for path in (self._path(key), self._meta_path(key)):
            with contextlib.suppress(FileNotFoundError, IsADirectoryError, NotADirectoryError):
                path.unlink()

    def list(self, prefix: str, start_after: str | None = None, limit: int = 1000) -> list[str]:
        """Walk ``root/<prefix>``; O(objects under the prefix), fine for one node."""
        base = self.root / check_prefix(prefix)
        keys = []
        for dirpath, dirnames, filenames in os.walk(base):
            dirnames[:] = [d for d in dirnames if not d.startswith(".")]
            rel = Path(dirpath).relative_to(self.root).as_posix()
            folder = "" if rel == "." else f"{rel}/"
            keys.extend(
                folder + name
                for name in filenames
                if valid_key(folder + name) and (start_after is None or folder + name > start_after)
            )
        return sorted(keys)[:limit]

    def presign(self, key: str, ttl_s: int, base_url: str | None = None) -> str:
        if base_url is None:
            raise ValueError("the local store's URLs are served by the ingress: pass base_url")
        query = urlencode(self.signer.sign(check_key(key), ttl_s=ttl_s))
        return f"{base_url.rstrip('/')}{FILES_ROUTE}/{key}?{query}"

    def sweep(self, prefix: str, max_age_s: float, now: float | None = None) -> int:
        """Delete objects under ``prefix`` last written more than ``max_age_s`` ago."""
        cutoff = (now if now is not None else time.time()) - max_age_s
        removed = 0
        for key in self.list(prefix, limit=1 << 62):
            try:
                if self._path(key).stat().st_mtime < cutoff:
                    self.delete(key)
                    removed += 1
            except FileNotFoundError:  # another replica swept it first
                continue
        return removed


class Sweeper:
    """A daemon thread that sweeps expired outputs every ``interval_s`` seconds."""

    def __init__(
        self, store: LocalImageStore, prefix: str, max_age_s: float, interval_s: float
    ) -> None:
        self.store = store
        self.prefix = prefix
        self.max_age_s = max_age_s
        self.interval_s = interval_s
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="imagegen-sweeper", daemon=True)

    def start(self) -> Sweeper:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                removed = self.store.sweep(self.prefix, self.max_age_s)
                if removed:
                    logger.info("swept %d expired images from %s", removed, self.prefix)
            except Exception:  # noqa: BLE001 - a failed sweep must not kill the thread
                logger.exception("sweeping %s failed", self.prefix)
            self._stop.wait(self.interval_s)
