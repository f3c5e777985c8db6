"""Async jobs over HTTP: ``Prefer: respond-async`` on the generation and edit routes,
``POST /v1/images/jobs`` (the wrapped route's body plus ``endpoint``), and
``GET /v1/images/jobs``, ``GET|DELETE /v1/images/jobs/{id}``.

Both forms answer ``202`` with the job object (``Preference-Applied: respond-async``
and ``Location``), after only cheap checks: the model name, ``stream`` (a job cannot
stream), and ``webhook_url`` (SSRF rules, and a configured secret). Everything else
the wrapped route checks when the job runs, so a bad body is a ``failed`` job with the
route's own 400 error object. For multipart edits the job fields are form fields:
``endpoint``, ``webhook_url``, ``webhook_events`` (repeated, or comma-separated).
Every job route sees only the caller's jobs: another key's job id is a 404.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute

from common import limits
from common.errors import APIError, invalid
from serve_app.asgi.endpoints import api_endpoint, owner_of, read_body, request_id_of
from serve_app.asgi.openapi import ApiRoute, Operation
from serve_app.asgi.scheduling import parse_priority, scheduling_of
from serve_app.inputs.fetch import ImageFetcher
from serve_app.inputs.uploads import read_form
from serve_app.jobs.replay import Endpoint, capture
from serve_app.jobs.service import JobRunner
from serve_app.jobs.webhooks import DEFAULT_EVENTS, EVENTS, WebhookSender, load_secret
from storage.jobs import JobRecord, new_job_id

if TYPE_CHECKING:
    from serve_app.ingress import Ingress

logger = logging.getLogger("imagegen.jobs")

JOBS_ROUTE = "/v1/images/jobs"
ASYNC_ENDPOINTS = (
    "/v1/images/generations",
    "/v1/images/edits",
    "/v1/images/variations",
    "/v1/images/imagine",
)
MULTIPART_ENDPOINTS = frozenset({"/v1/images/edits", "/v1/images/variations"})
DEFAULT_LIST_LIMIT, MAX_LIST_LIMIT = 20, 100


def wants_async(prefer: str | None) -> bool:
    """RFC 7240: ``Prefer: respond-async`` among comma-separated preferences."""
    if not prefer:
        return False
    return any(p.split(";")[0].strip().lower() == "respond-async" for p in prefer.split(","))


def not_found(job_id: str) -> APIError:
    return APIError("not_found", f"No job with id '{job_id}'.", param="id", code="job_not_found")


def job_fields(fields: dict[str, Any], multipart: bool) -> tuple[str | None, list[str], Any]:
    """-> (webhook_url, webhook_events, model name) from a JSON body or form fields."""
    url = fields.get("webhook_url")
    if url is not None and (not isinstance(url, str) or not url):
        raise invalid("'webhook_url' must be an http(s) URL.", "webhook_url", "invalid_url")
    events: Any = fields.get("webhook_events", DEFAULT_EVENTS)
    if multipart and isinstance(events, str):
        events = [e.strip() for e in events.split(",") if e.strip()]
    if not isinstance(events, list) or not events or any(e not in EVENTS for e in events):
        raise invalid(
            f"'webhook_events' must be a non-empty list of {list(EVENTS)}.", "webhook_events"
        )
    stream = fields.get("stream")
    if stream is True or (multipart and str(stream).lower() in ("true", "1")):
        raise invalid(
            "An async job cannot stream; drop 'stream' or 'Prefer: respond-async'.", "stream"
        )
    return url, sorted(set(events), key=EVENTS.index), fields.get("model") or None


def routes(ingress: Ingress, wrapped: list[BaseRoute]) -> list[BaseRoute]:
    """The job routes, then ``wrapped`` with the async-capable POST routes made so."""
    config = ingress.args.jobs
    endpoints: dict[str, Endpoint] = {
        r.path: r.endpoint
        for r in wrapped
        if isinstance(r, ApiRoute) and r.path in ASYNC_ENDPOINTS and "POST" in (r.methods or ())
    }
    fetcher = ImageFetcher(ingress.args.images)
    secret = load_secret(config.webhooks)
    sender = None if secret is None else WebhookSender(secret, config.webhooks, fetcher)
    runner = JobRunner(ingress.store, ingress.args, sender, endpoints)
    if not config.enabled:
        return wrapped

    def reply(
        record: JobRecord, status: int = 200, headers: dict[str, str] | None = None
    ) -> Response:
        return JSONResponse(record.public(), status_code=status, headers=headers)

    async def submit(
        request: Request,
        endpoint: str,
        body: bytes,
        fields: dict[str, Any],
        form: list[tuple[str, object]] | None,
    ) -> Response:
        url, events, model_name = job_fields(fields, endpoint in MULTIPART_ENDPOINTS)
        model = ingress.resolve_model(model_name)
        # A class the job could never run with is refused now, not when it runs.
        scheduling = scheduling_of(request, ingress.args.ingress.request_timeout_s, True)
        scheduling.resolve(parse_priority(fields.get("priority"), "priority"))
        if url is not None:
            if sender is None:
                raise invalid(
                    "Webhooks are not configured on this server (no signing secret).",
                    "webhook_url",
                    "webhooks_not_configured",
                )
            await fetcher.check(url, "webhook_url")
        owner = owner_of(request)
        record = runner.new_record(new_job_id(), owner, endpoint, model.id, url, events)
        stored, parts = capture(request, endpoint, body, form)
        record = await runner.submit(record, stored, parts)
        location = f"{ingress.base_url(request).rstrip('/')}{JOBS_ROUTE}/{record.id}"
        headers = {"preference-applied": "respond-async", "location": location}
        return reply(record, 202, headers)

    async def read_fields(
        request: Request, multipart: bool
    ) -> tuple[bytes, dict[str, Any], list[tuple[str, object]] | None]:
        """-> (body, job fields, the multipart parts or ``None`` for JSON)."""
        body = await read_body(request)
        if multipart:
            items = await read_form(request, ingress.args.images)
            fields = {k: v for k, v in items if not isinstance(v, bytes)}
            events = [str(v) for k, v in items if k == "webhook_events"]
            if events:  # repeated fields, each maybe comma-separated
                fields["webhook_events"] = ",".join(events)
            return body, fields, items
        if not body:
            raise invalid("The request body is empty; send a JSON object.", code="invalid_json")
        parsed = limits.parse_json(body)
        if not isinstance(parsed, dict):
            raise invalid("The request body must be a JSON object.")
        return body, parsed, None

    def async_form(path: str, endpoint: Endpoint) -> Endpoint:
        submit_here = api_endpoint(
            lambda request: _submit_from(request, path, path in MULTIPART_ENDPOINTS)
        )

        async def maybe_async(request: Request) -> Response:
            if wants_async(request.headers.get("prefer")):
                return await submit_here(request)
            return await endpoint(request)

        return maybe_async

    async def _submit_from(request: Request, path: str, multipart: bool) -> Response:
        body, fields, form = await read_fields(request, multipart)
        return await submit(request, path, body, fields, form)

    async def create(request: Request) -> Response:
        multipart = request.headers.get("content-type", "").startswith("multipart/form-data")
        body, fields, form = await read_fields(request, multipart)
        endpoint = fields.get("endpoint")
        if endpoint not in endpoints or (endpoint in MULTIPART_ENDPOINTS) != multipart:
            kind = "multipart/form-data" if multipart else "JSON"
            usable = [e for e in endpoints if (e in MULTIPART_ENDPOINTS) == multipart]
            raise invalid(
                f"'endpoint' must name the route to run; for a {kind} body one of {usable}, "
                f"got {endpoint!r}.",
                "endpoint",
                "invalid_endpoint",
            )
        return await submit(request, endpoint, body, fields, form)

    async def list_jobs(request: Request) -> Response:
        params = request.query_params
        unknown = sorted(set(params) - {"limit", "after"})
        if unknown:
            raise invalid(f"Unknown query parameters {unknown}; use limit and after.", unknown[0])
        raw_limit = params.get("limit", str(DEFAULT_LIST_LIMIT))
        if not raw_limit.isdigit() or not 1 <= int(raw_limit) <= MAX_LIST_LIMIT:
            raise invalid(
                f"limit must be an integer from 1 to {MAX_LIST_LIMIT}, got {raw_limit!r}.",
                "limit",
            )
        after = params.get("after") or None
        if after is not None and not runner.jobs.valid_id(after):
            raise invalid(f"after must be a job id, got {after!r}.", "after")
        records, more = await runner.list(owner_of(request), int(raw_limit), after)
        return JSONResponse(
            {
                "object": "list",
                "data": [r.public() for r in records],
                "first_id": records[0].id if records else None,
                "last_id": records[-1].id if records else None,
                "has_more": more,
            }
        )

    async def find(request: Request) -> JobRecord:
        job_id = request.path_params["job_id"]
        record = await runner.get(owner_of(request), job_id)
        if record is None:
            raise not_found(job_id)
        return record

    async def get_job(request: Request) -> Response:
        return reply(await find(request))

    async def cancel_job(request: Request) -> Response:
        record = await find(request)
        logger.info("request %s: cancelling job %s", request_id_of(request), record.id)
        return reply(await runner.cancel(record))

    rewrapped = [
        ApiRoute(r.path, async_form(r.path, r.endpoint), "POST", r.operation)
        if isinstance(r, ApiRoute) and r.path in endpoints
        else r
        for r in wrapped
    ]
    list_query = {
        "limit": {"type": "integer", "minimum": 1, "maximum": MAX_LIST_LIMIT},
        "after": {"type": "string"},
    }
    return [
        ApiRoute(
            JOBS_ROUTE,
            api_endpoint(create),
            "POST",
            Operation(
                "Submit an async job: the wrapped route's body plus 'endpoint'", accepted=True
            ),
        ),
        ApiRoute(
            JOBS_ROUTE,
            api_endpoint(list_jobs),
            "GET",
            Operation("List jobs, newest first", query=list_query),
        ),
        ApiRoute(JOBS_ROUTE + "/{job_id}", api_endpoint(get_job), "GET", Operation("One job")),
        ApiRoute(
            JOBS_ROUTE + "/{job_id}", api_endpoint(cancel_job), "DELETE", Operation("Cancel a job")
        ),
        *rewrapped,
    ]
