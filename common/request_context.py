"""Request ids: which one a request carries, and the same id in every log line.

Serve's HTTP proxy takes the client's ``X-Request-ID`` (or makes one), passes it to
the ingress in the request headers and to every replica in Serve's request context,
and echoes it in the response. The ingress only uses a *sane* incoming id (up to
:data:`MAX_REQUEST_ID_CHARS` of ``[A-Za-z0-9._:-]``) in its messages and logs; any
other value is replaced by a fresh one there, so a client cannot write arbitrary
text into our logs or error messages.

:func:`install_log_context` gives the ``imagegen`` loggers of a process one handler
whose lines carry ``request_id=…``, taken from the ingress middleware's context
variable or, on model and encoder replicas, from Serve's request context.
"""

from __future__ import annotations

import contextvars
import logging
import re
import sys
import uuid

MAX_REQUEST_ID_CHARS = 128
_SANE_ID = re.compile(rf"^[A-Za-z0-9._:-]{{1,{MAX_REQUEST_ID_CHARS}}}$")
REQUEST_ID: contextvars.ContextVar[str | None] = contextvars.ContextVar(
    "imagegen_request_id", default=None
)
LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s [request_id=%(request_id)s] %(message)s"
_ROOT_LOGGER = "imagegen"


def new_request_id() -> str:
    return uuid.uuid4().hex


def sane_request_id(value: str | None) -> str | None:
    """``value`` when it is fit for logs and messages, else ``None``."""
    if value is not None and _SANE_ID.match(value):
        return value
    return None


def current_request_id() -> str:
    """The request being served by this task: ingress context var, else Serve's context."""
    rid = REQUEST_ID.get()
    if rid:
        return rid
    try:
        from ray.serve.context import _get_serve_request_context

        serve_id = _get_serve_request_context().request_id
    except Exception:  # noqa: BLE001 - outside a replica (unit tests, scripts)
        serve_id = None
    return sane_request_id(serve_id) or "-"


class RequestIdFilter(logging.Filter):
    """Adds ``record.request_id`` (never rejects a record)."""

    def filter(self, record: logging.LogRecord) -> bool:
        if not hasattr(record, "request_id"):
            record.request_id = current_request_id()
        return True


def install_log_context(level: int = logging.INFO) -> None:
    """Route ``imagegen.*`` log lines through one stderr handler that names the request.

    Idempotent: replicas call it at start; a second call changes nothing.
    """
    logger = logging.getLogger(_ROOT_LOGGER)
    if any(isinstance(h, _RequestIdHandler) for h in logger.handlers):
        return
    handler = _RequestIdHandler(sys.stderr)
    handler.addFilter(RequestIdFilter())
    handler.setFormatter(logging.Formatter(LOG_FORMAT))
    logger.addHandler(handler)
    logger.setLevel(level)
    logger.propagate = False


class _RequestIdHandler(logging.StreamHandler):  # type: ignore[type-arg]
    """Marks the handler this module installed."""
