"""The ingress's scheduling decisions: class from body, header, key and async; deadline
from X-Request-Timeout and the SDKs' X-Stainless-Timeout."""

from __future__ import annotations

import time

import pytest
from starlette.requests import Request

from common.errors import APIError
from serve_app.asgi.scheduling import (
    ASYNC_JOB_SCOPE_KEY,
    MAX_PRIORITY_SCOPE_KEY,
    Scheduling,
    parse_priority,
    scheduling_of,
)

SERVER_TIMEOUT = 300.0


def request(headers: dict[str, str] | None = None, **scope: object) -> Request:
    raw = [(k.lower().encode(), v.encode()) for k, v in (headers or {}).items()]
    return Request({"type": "http", "headers": raw, **scope})


def test_defaults_are_interactive_for_sync_and_batch_for_async_jobs() -> None:
    assert scheduling_of(request(), SERVER_TIMEOUT).resolve(None) == "interactive"
    replayed = request(**{ASYNC_JOB_SCOPE_KEY: True})
    assert scheduling_of(replayed, SERVER_TIMEOUT).resolve(None) == "batch"
    assert scheduling_of(request(), SERVER_TIMEOUT, async_job=True).resolve(None) == "batch"


def test_the_body_wins_over_the_header() -> None:
    sched = scheduling_of(request({"X-Imagegen-Priority": " Batch "}), SERVER_TIMEOUT)
    assert sched.resolve(None) == "batch"
    assert sched.resolve("interactive") == "interactive"


def test_a_batch_key_defaults_to_batch_and_may_not_ask_for_interactive() -> None:
    limited = request(**{MAX_PRIORITY_SCOPE_KEY: "batch"})
    sched = scheduling_of(limited, SERVER_TIMEOUT)
    assert sched.resolve(None) == "batch" and sched.resolve("batch") == "batch"
    with pytest.raises(APIError) as refused:
        sched.resolve("interactive")
    assert refused.value.status == 403 and refused.value.code == "priority_not_allowed"
    assert refused.value.param == "priority"
    by_header = request({"x-imagegen-priority": "interactive"}, **{MAX_PRIORITY_SCOPE_KEY: "batch"})
    with pytest.raises(APIError) as refused:
        scheduling_of(by_header, SERVER_TIMEOUT).resolve(None)
    assert refused.value.param == "x-imagegen-priority"


@pytest.mark.parametrize("value", ["urgent", "", 3, True])
def test_an_unknown_class_is_a_400(value: object) -> None:
    with pytest.raises(APIError) as bad:
        parse_priority(value, "priority")
    assert bad.value.status == 400 and bad.value.code == "invalid_priority"


def test_deadlines_come_from_the_timeout_headers_capped_by_the_server() -> None:
    def timeout(headers: dict[str, str]) -> float | None:
        return scheduling_of(request(headers), SERVER_TIMEOUT).timeout_s

    assert timeout({}) == SERVER_TIMEOUT
    assert timeout({"x-request-timeout": "2.5"}) == 2.5
    assert timeout({"x-stainless-timeout": "30"}) == 30.0
    assert timeout({"x-request-timeout": "5", "x-stainless-timeout": "30"}) == 5.0
    assert timeout({"x-request-timeout": "9999"}) == SERVER_TIMEOUT
    assert timeout({"x-stainless-timeout": "nan"}) == SERVER_TIMEOUT  # the SDK's: ignored
    for bad in ("0", "-1", "soon", "inf"):
        with pytest.raises(APIError) as refused:
            timeout({"x-request-timeout": bad})
        assert refused.value.param == "x-request-timeout"
    at = scheduling_of(request({"x-request-timeout": "10"}), SERVER_TIMEOUT).deadline_at()
    assert at is not None and abs(at - (time.time() + 10)) < 1


def test_async_jobs_have_no_deadline() -> None:
    replayed = request({"x-stainless-timeout": "5"}, **{ASYNC_JOB_SCOPE_KEY: True})
    sched = scheduling_of(replayed, SERVER_TIMEOUT)
    assert sched.timeout_s is None and sched.deadline_at() is None
    assert Scheduling().deadline_at() is None
