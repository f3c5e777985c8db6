"""A request's scheduling class and deadline, from its headers, key and body.

The model replica's step scheduler (docs/scheduler.md#priority) admits by class, then
by deadline. Here the ingress decides both, for every dialect alike:

- **Class.** The body's ``priority`` field, else the ``X-Imagegen-Priority`` header,
  else the default: ``interactive`` for a synchronous or streamed request, ``batch``
  for an async job (and for every request of a batch-limited key). A key limited to
  ``batch`` (``ingress.api_keys.batch_keys_*``) that asks for ``interactive`` gets a
  403 ``priority_not_allowed``: never a silent downgrade.
- **Deadline.** ``X-Request-Timeout`` (seconds), else the OpenAI and Together SDKs'
  own ``X-Stainless-Timeout``, capped by ``ingress.request_timeout_s``; without
  either, ``request_timeout_s``. An async job has no deadline: nobody is waiting.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from typing import cast

from starlette.requests import Request

from common.errors import APIError, invalid
from common.job import PRIORITIES, Priority

PRIORITY_HEADER = "x-imagegen-priority"
TIMEOUT_HEADER = "x-request-timeout"
SDK_TIMEOUT_HEADER = "x-stainless-timeout"
# Set by the auth middleware for a key's requests; kept with a stored async job.
MAX_PRIORITY_SCOPE_KEY = "imagegen.max_priority"
# Set on a replayed async job's request (serve_app/jobs/replay.py).
ASYNC_JOB_SCOPE_KEY = "imagegen.async_job"


@dataclass(frozen=True)
class Scheduling:
    """What the HTTP request says about scheduling, before its body is parsed."""

    header_priority: Priority | None = None
    max_priority: Priority = "interactive"
    async_job: bool = False
    timeout_s: float | None = None  # None: no deadline

    def resolve(self, body_priority: Priority | None, param: str = "priority") -> Priority:
        """The class: the body's, else the header's, else the default; 403 above the key's."""
        asked = body_priority or self.header_priority
        if asked is None:
            return "batch" if self.async_job or self.max_priority == "batch" else "interactive"
        if asked == "interactive" and self.max_priority == "batch":
            raise APIError(
                "permission_denied",
                "This API key may only send batch work; drop the priority or send 'batch'.",
                param=param if body_priority else PRIORITY_HEADER,
                code="priority_not_allowed",
            )
        return asked

    def deadline_at(self) -> float | None:
        """The deadline as a Unix time (the model replica compares it with its clock)."""
        return None if self.timeout_s is None else time.time() + self.timeout_s


def scheduling_of(
    request: Request, request_timeout_s: float, async_job: bool | None = None
) -> Scheduling:
    """Read the class header, the key's limit, the async flag and the timeout headers
    (``async_job``: decided by the caller, e.g. when an async job is submitted)."""
    scope = request.scope
    if async_job is None:
        async_job = bool(scope.get(ASYNC_JOB_SCOPE_KEY))
    max_priority = cast(Priority, scope.get(MAX_PRIORITY_SCOPE_KEY, "interactive"))
    header = request.headers.get(PRIORITY_HEADER)
    timeout_s = None if async_job else request_timeout_s
    if not async_job:
        timeout_s = min(request_timeout_s, _timeout(request) or math.inf)
    return Scheduling(parse_priority(header), max_priority, async_job, timeout_s)


def parse_priority(value: object, param: str = PRIORITY_HEADER) -> Priority | None:
    """A priority header or field value; a 400 naming the accepted values otherwise."""
    if value is None:
        return None
    name = value.strip().lower() if isinstance(value, str) else value
    if name not in PRIORITIES:
        raise invalid(
            f"{value!r} is not a priority class; use one of {list(PRIORITIES)}.",
            param=param,
            code="invalid_priority",
        )
    return cast(Priority, name)


def _timeout(request: Request) -> float | None:
    """``X-Request-Timeout`` (a bad value is a 400), else the SDK's timeout (a bad value
    is ignored: the client did not choose the header)."""
    explicit = request.headers.get(TIMEOUT_HEADER)
    if explicit is not None:
        seconds = _seconds(explicit)
        if seconds is None:
            raise invalid(
                f"X-Request-Timeout must be a positive number of seconds, got '{explicit}'.",
                param=TIMEOUT_HEADER,
                code="invalid_timeout",
            )
        return seconds
    sdk = request.headers.get(SDK_TIMEOUT_HEADER)
    return None if sdk is None else _seconds(sdk)


def _seconds(text: str) -> float | None:
    try:
        value = float(text)
    except ValueError:
        return None
    return value if math.isfinite(value) and value > 0 else None
