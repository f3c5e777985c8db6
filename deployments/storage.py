"""Where ``response_format=url`` images live, and how their URLs are signed.

``LocalImageStore`` keeps files in one folder, for a single node: the encoder
writes, the ingress serves. Its URLs carry an expiry and an HMAC over key and
expiry, so they cannot be forged or extended, and expired ones are refused.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
import time
from pathlib import Path
from typing import Protocol
from urllib.parse import urlencode

from deployments.codec import CONTENT_TYPES
from deployments.tiny_sdxl import default_cache_root

FILES_ROUTE = "/v1/images/files"
_KEY_RE = re.compile(r"^[A-Za-z0-9_-]{16,64}\.(png|jpeg|webp)$")


class ImageStore(Protocol):
    def put(self, data: bytes, extension: str) -> str: ...

    def get(self, key: str) -> bytes | None: ...

    def delete(self, key: str) -> None: ...

    def url_for(self, key: str, base_url: str) -> str: ...


def content_type_for(key: str) -> str:
    return CONTENT_TYPES[key.rsplit(".", 1)[-1]]


class UrlSigner:
    """HMAC-SHA256 signatures over ``key`` and an expiry timestamp."""

    def __init__(self, secret: str, ttl_s: int) -> None:
        if len(secret) < 16:
            raise ValueError("URL signing key must be at least 16 characters")
        self._secret = secret.encode()
        self.ttl_s = ttl_s

    def _digest(self, key: str, expires: int) -> str:
        message = f"{key}:{expires}".encode()
        return hmac.new(self._secret, message, hashlib.sha256).hexdigest()

    def sign(self, key: str, now: float | None = None) -> dict[str, str]:
        expires = int((now if now is not None else time.time()) + self.ttl_s)
        return {"expires": str(expires), "signature": self._digest(key, expires)}

    def verify(self, key: str, expires: str, signature: str, now: float | None = None) -> str:
        """Return '' when valid, else the reason (for the error message)."""
        if not expires.isdigit():
            return "malformed expiry"
        if not hmac.compare_digest(self._digest(key, int(expires)), signature):
            return "bad signature"
        if int(expires) < (now if now is not None else time.time()):
            return "expired"
        return ""


class LocalImageStore:
    """Files in one local folder under random, unguessable keys."""

    def __init__(self, root: str | Path | None, signer: UrlSigner) -> None:
        self.root = Path(root) if root else default_cache_root() / "images"
        self.root.mkdir(parents=True, exist_ok=True)
        self.signer = signer

    @staticmethod
    def valid_key(key: str) -> bool:
        return bool(_KEY_RE.match(key))

    def _path(self, key: str) -> Path:
        if not self.valid_key(key):
            raise KeyError(key)
        return self.root / key

    def put(self, data: bytes, extension: str) -> str:
        if extension not in CONTENT_TYPES:
            raise ValueError(f"unsupported extension {extension!r}")
        key = f"{secrets.token_urlsafe(24)}.{extension}"
        path = self._path(key)
        staging = path.with_name(f".{key}.tmp")
        staging.write_bytes(data)
        staging.replace(path)
        return key

    def get(self, key: str) -> bytes | None:
        try:
            return self._path(key).read_bytes()
        except (KeyError, FileNotFoundError):
            return None

    def delete(self, key: str) -> None:
        try:
            self._path(key).unlink()
        except (KeyError, FileNotFoundError):
            return

    def url_for(self, key: str, base_url: str) -> str:
        query = urlencode(self.signer.sign(key))
        return f"{base_url.rstrip('/')}{FILES_ROUTE}/{key}?{query}"
