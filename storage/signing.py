"""HMAC-signed, expiring URLs for the local store (the ingress checks them)."""

from __future__ import annotations

import hashlib
import hmac
import time


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

    def sign(self, key: str, now: float | None = None, ttl_s: int | None = None) -> dict[str, str]:
        ttl = self.ttl_s if ttl_s is None else ttl_s
        expires = int((now if now is not None else time.time()) + ttl)
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
