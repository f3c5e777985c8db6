"""``/openapi.json`` and a schemathesis run against the live ``imagegen-hardened`` app.

Schemathesis generates requests from the published document, valid ones and
invalid ones, and checks each answer: never a 5xx, status codes and bodies as the
document says, content types as declared. Examples are bounded per operation
(:data:`MAX_EXAMPLES`) and the run is deterministic (a fixed seed), so CI time is
bounded and a failure replays.
"""

from __future__ import annotations

from collections.abc import Callable

import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis.errors import Unsatisfiable
from schemathesis import GenerationMode
from schemathesis.checks import (
    content_type_conformance,
    negative_data_rejection,
    not_a_server_error,
    response_schema_conformance,
    status_code_conformance,
)

from tests.support.hardened_app import API_KEY

MAX_EXAMPLES = 12
AUTH = {"authorization": f"Bearer {API_KEY}"}
CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_schema_conformance,
    negative_data_rejection,
]


def test_openapi_lists_every_route(http: httpx.Client) -> None:
    from ray import serve  # noqa: F401 - the app is running in this session

    document = http.get("/openapi.json").json()
    assert document["openapi"].startswith("3.")
    paths = document["paths"]
    for path, method in [
        ("/v1/images/generations", "post"),
        ("/v1/models", "get"),
        ("/v1/models/{model}", "get"),
        ("/v1/images/imagine", "post"),
        ("/v1/images/{image_id}", "delete"),
        ("/sdapi/v1/txt2img", "post"),
        ("/health", "get"),
    ]:
        assert method in paths[path], (path, method)
    generate = paths["/v1/images/generations"]["post"]
    ref = generate["requestBody"]["content"]["application/json"]["schema"]["$ref"]
    request_schema = document["components"]["schemas"][ref.rsplit("/", 1)[-1]]
    # From the pydantic model; optional members also take null (the default).
    n_options = request_schema["properties"]["n"]["anyOf"]
    assert {"type": "null"} in n_options
    assert [o["maximum"] for o in n_options if "maximum" in o] == [10]
    assert generate["security"] == [{"apiKey": []}]
    assert "security" not in paths["/health"]["get"]


@pytest.fixture(scope="module")
def live_schema(hardened_url: str) -> schemathesis.BaseSchema:
    schema = schemathesis.openapi.from_url(f"{hardened_url}/openapi.json")
    schema.config.update(base_url=hardened_url)
    return schema


@pytest.mark.parametrize("mode", [GenerationMode.POSITIVE, GenerationMode.NEGATIVE])
def test_generated_requests(live_schema: schemathesis.BaseSchema, mode: GenerationMode) -> None:
    """Every operation, ``MAX_EXAMPLES`` generated cases each; all failures listed at once."""
    failures: list[str] = []
    skipped: list[str] = []
    operations = [result.ok() for result in live_schema.get_all_operations()]
    assert len(operations) >= 15
    for operation in operations:
        headers = {} if operation.path.startswith("/sdapi/") else AUTH
        try:
            _fuzz(operation, mode, headers)()
        except Unsatisfiable:
            # Negative mode only: nothing in this operation can be made invalid (no
            # body, no parameters, or only a path segment that cannot be empty).
            assert mode is GenerationMode.NEGATIVE, operation.path
            skipped.append(operation.path)
        except Exception as exc:  # noqa: BLE001 - collected, then reported together
            failures.append(f"{operation.method.upper()} {operation.path}: {exc}"[:3000])
    assert not failures, "\n\n".join(failures)
    print(f"schemathesis {mode.value}: {len(operations) - len(skipped)} operations fuzzed")


def _fuzz(
    operation: schemathesis.APIOperation, mode: GenerationMode, headers: dict[str, str]
) -> Callable[[], None]:
    @given(case=operation.as_strategy(generation_mode=mode))
    @settings(
        max_examples=MAX_EXAMPLES,
        deadline=None,
        derandomize=True,
        database=None,
        suppress_health_check=list(HealthCheck),
        phases=[Phase.explicit, Phase.generate],
    )
    def run(case: schemathesis.Case) -> None:
        case.call_and_validate(headers=headers, checks=CHECKS, timeout=120)

    return run
