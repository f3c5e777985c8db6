"""One error taxonomy, one table mapping it to HTTP status and OpenAI error ``type``.

Every failure a client can see becomes an :class:`APIError` before it leaves the
ingress. Unexpected exceptions become a generic 500 that carries the request id;
their details go to the log, never to the client.
"""

from __future__ import annotations

import logging
from typing import Any, Literal, TypeVar, get_args

from pydantic import BaseModel, ValidationError
from pydantic.fields import FieldInfo

ModelT = TypeVar("ModelT", bound=BaseModel)

logger = logging.getLogger("imagegen.errors")


class ErrorObject(BaseModel):
    """OpenAI's error object (openai-python ``types/shared/error_object.py``)."""

    message: str
    type: str
    param: str | None = None
    code: str | None = None


class ErrorResponse(BaseModel):
    error: ErrorObject


class StorageUnavailable(Exception):
    """The backing store could not be reached or refused an operation (a 503)."""


ErrorKind = Literal[
    "invalid_request",
    "unprocessable",
    "authentication",
    "permission_denied",
    "not_found",
    "method_not_allowed",
    "payload_too_large",
    "rate_limited",
    "unavailable",
    "timeout",
    "internal",
]

# kind -> (HTTP status, OpenAI error type).
#
# Overload has two kinds, told apart by whether the model has a running replica
# when Serve's queue for it (``max_queued_requests``) is full:
# - ``rate_limited`` (429): replicas are running and all busy; retry soon.
# - ``unavailable`` (503): no replica is running, because the model is scaled to
#   zero and still cold-starting (``code="model_cold_start"``, ``Retry-After`` =
#   the model's ``cold_start_retry_after_s``), or the deployment is unavailable.
# Requests within the queue limit always wait, also through a cold start.
ERROR_TABLE: dict[ErrorKind, tuple[int, str]] = {
    "invalid_request": (400, "invalid_request_error"),
    # A body that does not fit the schema, where the dialect says 422 (A1111/FastAPI).
    "unprocessable": (422, "invalid_request_error"),
    "authentication": (401, "authentication_error"),
    "permission_denied": (403, "permission_error"),
    "not_found": (404, "invalid_request_error"),
    "method_not_allowed": (405, "invalid_request_error"),
    "payload_too_large": (413, "invalid_request_error"),
    "rate_limited": (429, "rate_limit_error"),
    "unavailable": (503, "service_unavailable_error"),
    "timeout": (504, "timeout_error"),
    "internal": (500, "server_error"),
}


class APIError(Exception):
    """An error with a client-facing message; safe to send as-is."""

    def __init__(
        self,
        kind: ErrorKind,
        message: str,
        *,
        param: str | None = None,
        code: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.kind = kind
        self.message = message
        self.param = param
        self.code = code
        self.headers = headers or {}

    def __reduce__(self) -> tuple[Any, ...]:
        # Keyword-only arguments need help to cross a Ray handle intact.
        return (_rebuild, (self.kind, self.message, self.param, self.code, self.headers))

    @property
    def status(self) -> int:
        return ERROR_TABLE[self.kind][0]

    def body(self) -> dict[str, Any]:
        info = ErrorObject(
            message=self.message, type=ERROR_TABLE[self.kind][1], param=self.param, code=self.code
        )
        return ErrorResponse(error=info).model_dump()

    def a1111_body(self) -> dict[str, Any]:
        """AUTOMATIC1111's error shape (``modules/api/api.py: handle_exception``)."""
        name = "RequestValidationError" if self.kind == "unprocessable" else "HTTPException"
        return {
            "error": name,
            "detail": self.message,
            "body": "",
            "errors": f"{self.status}: {self.message}",
        }


def _rebuild(
    kind: ErrorKind, message: str, param: str | None, code: str | None, headers: dict[str, str]
) -> APIError:
    return APIError(kind, message, param=param, code=code, headers=headers)


def check_image_count(got: int, expected: int) -> None:
    """Every dialect's response: the encoder must return one image per seed."""
    if got != expected:
        raise APIError(
            "internal", f"image count mismatch between model and encoder ({got} != {expected})"
        )


def invalid(message: str, param: str | None = None, code: str | None = None) -> APIError:
    return APIError("invalid_request", message, param=param, code=code)


# Strict-mode type errors -> the JSON type the field expects, in OpenAI's words.
EXPECTED_TYPES = {
    "int_type": "an integer",
    "float_type": "a number",
    "bool_type": "a boolean",
    "string_type": "a string",
    "dict_type": "an object",
    "list_type": "an array",
}


def json_type(value: Any) -> str:
    """What a JSON value is, as OpenAI's type errors name it."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int):
        return "an integer"
    if isinstance(value, float):
        return "a decimal"
    if isinstance(value, str):
        return "a string"
    return "an array" if isinstance(value, list) else "an object"


def from_validation_error(exc: ValidationError) -> APIError:
    """Turn pydantic's first complaint into a 400 that names the parameter."""
    first = exc.errors(include_url=False)[0]
    loc = [str(part) for part in first.get("loc", ()) if part != "body"]
    param = ".".join(loc) or None
    message = first.get("msg", "invalid request")
    message = message.removeprefix("Value error, ")
    kind = first.get("type")
    if param and kind in EXPECTED_TYPES:
        given = json_type(first.get("input"))
        message = (
            f"Invalid type for '{param}': expected {EXPECTED_TYPES[kind]}, but got {given} instead."
        )
    elif param and kind != "value_error":
        given = first.get("input")
        if kind == "missing":
            message = f"Missing required parameter: '{param}'."
        else:
            message = f"Invalid value for '{param}': {message} (got {given!r})."
    return APIError("invalid_request", message, param=param, code=_code_for(kind))


def drop_nulls(cls: type[BaseModel], body: dict[str, Any]) -> dict[str, Any]:
    """A JSON ``null`` means "the default" (OpenAI's API, FastAPI's optional fields): drop
    each null member whose field does not take ``None`` itself (where ``None`` has a
    meaning of its own, such as imagine's random seed, it is kept)."""
    return {
        key: value
        for key, value in body.items()
        if value is not None or _takes_none(cls.model_fields.get(key))
    }


def _takes_none(field: FieldInfo | None) -> bool:
    if field is None:  # an unknown field: kept, and reported as ignored
        return True
    annotation = field.annotation
    return annotation is Any or type(None) in get_args(annotation)


def validate(
    cls: type[ModelT], body: Any, kind: ErrorKind = "invalid_request", strict: bool = False
) -> ModelT:
    """Validate a JSON body into ``cls``; every failure names the parameter.

    Null members are dropped first (:func:`drop_nulls`): a null is the field's default.
    ``strict``: JSON types must match as OpenAI's API requires (``"3"`` is not an
    integer, ``true`` is not a number; an integer is a number). Lax mode is for
    multipart forms, whose values are all strings, and for A1111, whose own FastAPI
    models coerce.
    """
    if not isinstance(body, dict):
        raise APIError(kind, "The request body must be a JSON object.")
    try:
        return cls.model_validate(drop_nulls(cls, body), strict=strict)
    except ValidationError as exc:
        err = from_validation_error(exc)
        raise APIError(kind, err.message, param=err.param, code=err.code) from None


def _code_for(pydantic_type: str | None) -> str | None:
    if pydantic_type == "missing":
        return "missing_required_parameter"
    if pydantic_type in EXPECTED_TYPES:
        return "invalid_type"
    return "invalid_value" if pydantic_type else None


def unwrap(exc: BaseException) -> BaseException:
    """An error raised in a replica arrives wrapped, once per handle hop."""
    from ray import exceptions as ray_exc

    while isinstance(exc, ray_exc.RayTaskError) and getattr(exc, "cause", None) is not None:
        exc = exc.cause
    return exc


def _upstream_died(exc: BaseException) -> bool:
    """A replica this request depended on died: Serve's router wraps "an upstream actor
    died before finishing a dependent task" in a RayServeException whose ``__cause__`` is
    the ActorDiedError, and pixels whose owner (the model replica) died before the
    encoder read them arrive as an ObjectLostError (OwnerDiedError), possibly wrapped."""
    from ray import exceptions as ray_exc

    seen = 0
    current: BaseException | None = exc
    while current is not None and seen < 8:
        current = unwrap(current)
        if isinstance(current, ray_exc.RayActorError | ray_exc.ObjectLostError):
            return True
        current, seen = current.__cause__, seen + 1
    return False


def is_backpressure(exc: BaseException) -> bool:
    """Serve refused the request because a deployment's queue is full."""
    from ray.serve import exceptions as serve_exc

    return isinstance(unwrap(exc), serve_exc.BackPressureError)


def model_starting(model_id: str, retry_after_s: int) -> APIError:
    """The queue is full while the model has no running replica (a cold start)."""
    return APIError(
        "unavailable",
        f"The model '{model_id}' is starting up (it was scaled to zero) and its queue is "
        f"full; retry after {retry_after_s} s.",
        code="model_cold_start",
        headers={"retry-after": str(retry_after_s)},
    )


def from_exception(exc: BaseException, request_id: str) -> APIError:
    """Classify anything raised while serving a request; log what the client won't see."""
    from ray import exceptions as ray_exc
    from ray.serve import exceptions as serve_exc

    exc = unwrap(exc)
    if isinstance(exc, APIError):
        return exc
    if isinstance(exc, serve_exc.BackPressureError):
        return APIError(
            "rate_limited",
            "The server is at capacity; retry after a short wait.",
            code="overloaded",
            headers={"retry-after": "1"},
        )
    if isinstance(exc, serve_exc.DeploymentUnavailableError | ray_exc.ActorUnavailableError):
        return APIError(
            "unavailable",
            "No replica is available to serve this request; retry shortly.",
            code="unavailable",
            headers={"retry-after": "5"},
        )
    if isinstance(exc, ray_exc.RayActorError) or _upstream_died(exc):
        # A replica died while it held this request (killed, OOM, node lost), or
        # while the encoder waited for the model's pixels (Serve wraps that death
        # in a RayServeException whose __cause__ is the ActorDiedError). The
        # request is not retried here (it may have half-run); Serve replaces the
        # replica, and the client's retry lands on a healthy one.
        logger.warning("request %s: a replica died while serving it", request_id)
        return APIError(
            "unavailable",
            "A replica serving this request stopped before it finished; retry shortly.",
            code="replica_failed",
            headers={"retry-after": "5"},
        )
    if isinstance(exc, StorageUnavailable):
        logger.error("request %s: image store failed", request_id, exc_info=exc)
        return APIError(
            "unavailable",
            "The image store is unavailable; retry shortly.",
            code="storage_unavailable",
            headers={"retry-after": "5"},
        )
    if isinstance(exc, TimeoutError | ray_exc.GetTimeoutError):
        return APIError("timeout", "The request timed out.", code="timeout")
    logger.error("request %s failed", request_id, exc_info=exc)
    return APIError(
        "internal",
        f"The server had an error while processing your request (request id {request_id}).",
        code="internal_error",
    )
