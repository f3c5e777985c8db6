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
from common.job import Priority
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


def _read(file: str | None, env: str | None) -> list[str]:
    if file:
        return parse_keys(Path(file).expanduser().read_text())
    if env:
        return parse_keys(os.environ.get(env, ""), separator=",")
    return []


def load_keys(config: ApiKeysConfig) -> list[str]:
    """Keys from the configured file or environment variable; empty means auth is off."""
    keys = _read(config.keys_file, config.keys_env)
    if config.required and not keys + load_batch_keys(config):
        where = config.keys_file or f"${config.keys_env}"
        raise ValueError(f"ingress.api_keys.required is set but no API key was found in {where}")
    return keys


def load_batch_keys(config: ApiKeysConfig) -> list[str]:
    """Keys limited to the batch class (``max_priority: batch``)."""
    return _read(config.batch_keys_file, config.batch_keys_env)


def key_owner(key: str) -> str:
    """An opaque, stable id for a key: safe to log and to use in storage keys."""
    return "key_" + hashlib.sha256(key.encode()).hexdigest()[:24]


class ApiKeys:
    """Checks Bearer keys; holds only their SHA-256 digests."""

    def __init__(self, keys: list[str], batch_keys: list[str] | None = None) -> None:
        everything = keys + (batch_keys or [])
        self._digests = [hashlib.sha256(k.encode()).digest() for k in everything]
        self._owners = [key_owner(k) for k in everything]
        self._batch_owners = frozenset(key_owner(k) for k in batch_keys or [])

    def max_priority(self, owner: str) -> Priority:
        """The highest class a key's requests may take."""
        return "batch" if owner in self._batch_owners else "interactive"

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
