"""API keys: ``Authorization: Bearer <key>`` on the OpenAI-style routes.

Keys come from the environment variable ``ingress.api_keys.keys_env`` (comma
separated) or the file ``ingress.api_keys.keys_file`` (a mounted secret, one key
per line, ``#`` comments). Without keys, auth is off (the README's run command
works as is); with ``required: true`` a missing key stops the deployment instead.

A presented key is hashed and compared with every known key's hash in constant
time (``hmac.compare_digest``), so timing tells nothing about how much of it
matched. Keys are never logged: a caller is known by :func:`key_owner`, a hash
prefix, which is also the owner of its stored images (``scope["imagegen.owner"]``).

Routes that stay open (:func:`needs_api_key`): liveness and readiness, the
OpenAPI document, the playground page (static files, no data), the A1111 routes
(their own Basic auth, ``a1111_auth.py``), and image URLs whose signature or
publication is the credential.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import os
from pathlib import Path

from common.config import ApiKeysConfig
from common.errors import APIError
from common.paths import A1111_ROOT

logger = logging.getLogger("imagegen.auth")

MIN_KEY_CHARS = 16
# The playground's static page and assets are open: the page asks for a key itself.
OPEN_PATHS = frozenset({"/health", "/ready", "/openapi.json", "/", "/playground"})
OPEN_PREFIXES = (A1111_ROOT, "/v1/images/files/", "/v1/images/public/", "/playground/")


def needs_api_key(path: str) -> bool:
    """Whether a route (path relative to the app's route prefix) needs a Bearer key."""
    return path not in OPEN_PATHS and not path.startswith(OPEN_PREFIXES)


def parse_keys(text: str, separator: str | None = None) -> list[str]:
    """Keys from a secret's text; a short key fails at startup, without echoing it."""
    entries = text.split(separator) if separator else text.splitlines()
    keys = []
    for index, raw in enumerate(entries):
        key = raw.strip()
        if not key or key.startswith("#"):
            continue
        if len(key) < MIN_KEY_CHARS or any(c.isspace() for c in key):
            raise ValueError(
                f"API key #{index + 1} must be at least {MIN_KEY_CHARS} characters without spaces"
            )
        keys.append(key)
    return keys


def load_keys(config: ApiKeysConfig) -> list[str]:
    """Keys from the configured file or environment variable; empty means auth is off."""
    keys: list[str] = []
    if config.keys_file:
        keys = parse_keys(Path(config.keys_file).expanduser().read_text())
    elif config.keys_env:
        keys = parse_keys(os.environ.get(config.keys_env, ""), separator=",")
    if config.required and not keys:
        where = config.keys_file or f"${config.keys_env}"
        raise ValueError(f"ingress.api_keys.required is set but no API key was found in {where}")
    return keys


def key_owner(key: str) -> str:
    """An opaque, stable id for a key: safe to log and to use in storage keys."""
    return "key_" + hashlib.sha256(key.encode()).hexdigest()[:24]


class ApiKeys:
    """Checks Bearer keys; holds only their SHA-256 digests."""

    def __init__(self, keys: list[str]) -> None:
        self._digests = [hashlib.sha256(k.encode()).digest() for k in keys]
        self._owners = [key_owner(k) for k in keys]

    @property
    def enabled(self) -> bool:
        return bool(self._digests)

    def owner(self, authorization: str | None) -> str:
        """The caller's owner id for a valid ``Authorization`` header; else a 401."""
        scheme, _, given = (authorization or "").partition(" ")
        given = given.strip()
        if scheme.lower() != "bearer" or not given:
            raise _unauthorized(
                "You didn't provide an API key. Send it as 'Authorization: Bearer <key>'.",
                "missing_api_key",
            )
        digest = hashlib.sha256(given.encode("utf-8", "surrogateescape")).digest()
        found: str | None = None
        for known, owner in zip(self._digests, self._owners, strict=True):
            # Compare against every key, so timing does not reveal which one matched.
            if hmac.compare_digest(digest, known):
                found = owner
        if found is None:
            raise _unauthorized("Incorrect API key provided.", "invalid_api_key")
        return found


def _unauthorized(message: str, code: str) -> APIError:
    return APIError("authentication", message, code=code, headers={"www-authenticate": "Bearer"})
