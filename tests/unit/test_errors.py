"""The error table and the classification of everything that can go wrong."""

from __future__ import annotations

import pickle

import pytest
from ray import exceptions as ray_exc
from ray.serve import exceptions as serve_exc

from common.errors import ERROR_TABLE, APIError, from_exception, is_backpressure, model_starting


@pytest.mark.parametrize(
    "kind,status,error_type",
    [
        ("invalid_request", 400, "invalid_request_error"),
        ("authentication", 401, "authentication_error"),
        ("not_found", 404, "invalid_request_error"),
        ("payload_too_large", 413, "invalid_request_error"),
        ("rate_limited", 429, "rate_limit_error"),
        ("unavailable", 503, "service_unavailable_error"),
        ("timeout", 504, "timeout_error"),
        ("internal", 500, "server_error"),
    ],
)
def test_error_table(kind: str, status: int, error_type: str) -> None:
    assert ERROR_TABLE[kind] == (status, error_type)  # type: ignore[index]
    err = APIError(kind, "boom", param="p", code="c")  # type: ignore[arg-type]
    assert err.status == status
    assert err.body() == {
        "error": {"message": "boom", "type": error_type, "param": "p", "code": "c"}
    }


def test_api_error_survives_pickling_with_keywords() -> None:
    err = APIError("not_found", "no model", param="model", code="model_not_found")
    back = pickle.loads(pickle.dumps(err))
    assert (back.kind, back.message, back.param, back.code) == (
        "not_found",
        "no model",
        "model",
        "model_not_found",
    )


def test_backpressure_is_429_with_retry_after() -> None:
    """Busy replicas with a full queue; the cold-start case is the ingress's call."""
    err = from_exception(
        serve_exc.BackPressureError(num_queued_requests=9, max_queued_requests=8), "r"
    )
    assert err.status == 429 and err.headers["retry-after"]


def test_backpressure_is_recognised_through_a_handle_hop() -> None:
    inner = serve_exc.BackPressureError(num_queued_requests=2, max_queued_requests=2)
    assert is_backpressure(ray_exc.RayTaskError("encode", "tb", inner))
    assert not is_backpressure(RuntimeError("x"))


def test_cold_start_is_503_with_the_models_retry_after() -> None:
    err = model_starting("tiny-4step", 12)
    assert err.status == 503 and err.headers == {"retry-after": "12"}
    assert err.body()["error"]["type"] == "service_unavailable_error"
    assert err.code == "model_cold_start" and "tiny-4step" in err.message


def test_unavailable_is_503() -> None:
    err = from_exception(serve_exc.DeploymentUnavailableError("Model:x"), "r")
    assert err.status == 503 and err.headers["retry-after"]


def test_timeout_is_504() -> None:
    assert from_exception(TimeoutError(), "r").status == 504


def test_wrapped_api_error_is_unwrapped() -> None:
    inner = APIError("invalid_request", "bad", param="n")
    wrapped = ray_exc.RayTaskError("generate", "traceback text", inner)
    assert from_exception(wrapped, "r") is inner


def test_unexpected_error_hides_details_and_carries_request_id() -> None:
    err = from_exception(RuntimeError("/secret/path.py line 3: KeyError"), "req-123")
    assert err.status == 500
    assert "req-123" in err.message
    assert "secret" not in err.message and "KeyError" not in err.message


def test_an_upstream_replica_death_is_a_clean_503() -> None:
    """The model replica dies while the encoder waits for its pixels: Serve's router
    raises a RayServeException caused by the ActorDiedError (seen killing the model
    replica under load in step mode)."""
    from ray.exceptions import ActorDiedError
    from ray.serve.exceptions import RayServeException

    from common.errors import from_exception

    wrapped = RayServeException("Request to deployment 'Encoder' failed because an upstream")
    wrapped.__cause__ = ActorDiedError()
    error = from_exception(wrapped, "req-1")
    assert (error.status, error.code) == (503, "replica_failed")
    assert from_exception(RayServeException("other"), "req-2").code == "internal_error"


def test_pixels_whose_owner_died_are_a_clean_503() -> None:
    """The model replica died after producing the pixels, before the encoder read them:
    the object's owner is gone (OwnerDiedError), wrapped once per handle hop."""
    from ray.exceptions import OwnerDiedError, RayTaskError

    from common.errors import from_exception

    lost = OwnerDiedError("00" * 28, "", "")
    wrapped = RayTaskError("Encoder.encode", "traceback", lost)
    for exc in (lost, wrapped):
        error = from_exception(exc, "req-3")
        assert (error.status, error.code) == (503, "replica_failed")
