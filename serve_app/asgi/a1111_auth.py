"""A1111 routes' access: HTTP Basic auth, who "a client" is, and its saved options.

Auth follows A1111's ``--api-auth``: ``user:password[,user:password...]``, read from
the environment variable ``a1111.auth_env`` or the file ``a1111.auth_file`` (a
mounted secret). Passwords are compared in constant time and never logged.

A client is its Basic-auth user name when auth is on (every Open WebUI instance
holds one credential), else its address as the HTTP proxy saw it (forwarding
headers are not trusted). Its options (``sd_model_checkpoint``) are small JSON
files under ``a1111.options_dir``, named by a hash of the client key, so every
ingress replica on the node sees the same choice; like the local image store,
that is single-node unless the folder is shared.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import logging
import os
from pathlib import Path
from typing import Any

from starlette.requests import Request

from common.config import A1111Config
from common.errors import APIError
from common.paths import default_cache_root

logger = logging.getLogger("imagegen.a1111")


def parse_credentials(text: str) -> list[tuple[str, str]]:
    """``"u1:p1,u2:p2"`` -> pairs; a malformed entry fails at startup, without echoing it."""
    pairs = []
    for index, entry in enumerate(part.strip() for part in text.split(",")):
        if not entry:
            continue
        user, sep, password = entry.partition(":")
        if not sep or not user or not password:
            raise ValueError(f"A1111 credential #{index + 1} is not 'user:password'")
        pairs.append((user, password))
    return pairs


def load_credentials(config: A1111Config) -> list[tuple[str, str]]:
    """Credentials from the configured file or environment variable; empty: auth off."""
    if config.auth_file:
        return parse_credentials(Path(config.auth_file).expanduser().read_text())
    if config.auth_env:
        return parse_credentials(os.environ.get(config.auth_env, ""))
    return []


class BasicAuth:
    """Checks ``Authorization: Basic ...`` against the configured users."""

    def __init__(self, credentials: list[tuple[str, str]]) -> None:
        self._credentials = [(u.encode(), p.encode()) for u, p in credentials]

    @property
    def enabled(self) -> bool:
        return bool(self._credentials)

    def user(self, request: Request) -> str | None:
        """The authenticated user name; ``None`` when auth is off; 401 when it fails."""
        if not self.enabled:
            return None
        given = _basic_credentials(request.headers.get("authorization", ""))
        if given is not None:
            user, password = given
            matched = False
            for known_user, known_password in self._credentials:
                # Compare every pair fully, so timing does not tell which part failed.
                same_user = hmac.compare_digest(user, known_user)
                same_password = hmac.compare_digest(password, known_password)
                matched |= same_user and same_password
            if matched:
                return user.decode()
        raise APIError(
            "authentication",
            "Incorrect username or password",
            code="invalid_credentials",
            headers={"www-authenticate": "Basic"},
        )


def _basic_credentials(header: str) -> tuple[bytes, bytes] | None:
    scheme, _, value = header.partition(" ")
    if scheme.lower() != "basic" or not value:
        return None
    try:
        decoded = base64.b64decode(value.strip(), validate=True)
    except (binascii.Error, ValueError):
        return None
    user, sep, password = decoded.partition(b":")
    return (user, password) if sep else None


def client_key(request: Request, user: str | None) -> str:
    if user is not None:
        return f"user:{user}"
    host = request.client.host if request.client else "unknown"
    return f"addr:{host}"


class ClientOptions:
    """Per-client A1111 options on disk, one small JSON file per client."""

    def __init__(self, root: str | Path | None) -> None:
        self.root = Path(root) if root else default_cache_root() / "a1111-options"
        self.root.mkdir(parents=True, exist_ok=True)

    def _path(self, key: str) -> Path:
        return self.root / (hashlib.sha256(key.encode()).hexdigest()[:32] + ".json")

    def get(self, key: str) -> dict[str, Any]:
        try:
            data = json.loads(self._path(key).read_text())
        except (FileNotFoundError, json.JSONDecodeError):
            return {}
        return data if isinstance(data, dict) else {}

    def update(self, key: str, values: dict[str, Any]) -> None:
        path = self._path(key)
        merged = {**self.get(key), **values}
        staging = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        staging.write_text(json.dumps(merged))
        staging.replace(path)
