"""JSON dialects are strictly typed, as OpenAI's API is; forms and A1111 stay lax.

A wrong JSON type is a 400 naming the field and the type it expects (``"n": "3"`` is
not 3). An integer is a number (``guidance_scale: 5``). Multipart form values are all
strings, and A1111's own FastAPI models coerce, so those two keep pydantic's lax mode.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from common.errors import APIError
from serve_app.dialects import a1111, imagine_api, imagine_sdk, openai, openai_edits, together

EXPECTED = {int: "an integer", float: "a number", bool: "a boolean", str: "a string"}
# A wrong value of each JSON type, and how the message names it.
WRONG: dict[type, list[tuple[Any, str]]] = {
    int: [("3", "a string"), (2.5, "a decimal"), (True, "a boolean"), (2.0, "a decimal")],
    float: [("5", "a string"), (True, "a boolean")],
    bool: [("true", "a string"), (1, "an integer"), (1.0, "a decimal")],
    str: [(5, "an integer"), (["a"], "an array")],
}
DIALECTS: dict[str, tuple[Callable[[Any], Any], dict[str, Any], dict[str, type]]] = {
    "openai": (
        openai.parse_generate,
        {"prompt": "x"},
        {
            "n": int,
            "seed": int,
            "num_inference_steps": int,
            "partial_images": int,
            "output_compression": int,
            "guidance_scale": float,
            "stream": bool,
            "prompt": str,
        },
    ),
    "together": (
        together.parse,
        {"prompt": "x"},
        {
            "n": int,
            "seed": int,
            "steps": int,
            "width": int,
            "height": int,
            "guidance": float,
            "guidance_scale": float,
            "strength": float,
            "disable_safety_checker": bool,
        },
    ),
    "imagine": (
        imagine_sdk.parse,
        {"prompt": "x"},
        {
            "n": int,
            "seed": int,
            "seed_increment": int,
            "num_inference_steps": int,
            "cache_interval": int,
            "guidance_scale": float,
            "stream": bool,
        },
    ),
    "imagine_api": (
        imagine_api.parse_imagine,
        {"name": "a", "prompt": "x"},
        {"seed": int, "name": str, "prompt": str},
    ),
}
CASES = [
    pytest.param(dialect, field, value, got, id=f"{dialect}-{field}-{value!r}")
    for dialect, (_, _, fields) in DIALECTS.items()
    for field, kind in fields.items()
    for value, got in WRONG[kind]
]


@pytest.mark.parametrize("dialect,field,value,got", CASES)
def test_wrong_json_type_is_a_400_naming_field_and_type(
    dialect: str, field: str, value: Any, got: str
) -> None:
    parse, base, fields = DIALECTS[dialect]
    with pytest.raises(APIError) as info:
        parse({**base, field: value})
    err = info.value
    assert (err.status, err.param, err.code) == (400, field, "invalid_type")
    expected = EXPECTED[fields[field]]
    assert err.message == f"Invalid type for '{field}': expected {expected}, but got {got} instead."


@pytest.mark.parametrize(
    "parse,body,field",
    [
        (openai.parse_generate, {"prompt": "x", "guidance_scale": 5}, "guidance_scale"),
        (together.parse, {"prompt": "x", "guidance": 3}, "guidance"),
        (imagine_sdk.parse, {"prompt": "x", "guidance_scale": 0}, "guidance_scale"),
    ],
)
def test_an_integer_is_a_number(parse: Callable[[Any], Any], body: dict[str, Any], field: str):
    value = getattr(parse(body), field)
    assert isinstance(value, float) and value == body[field]


def test_edit_forms_stay_lax() -> None:
    """Multipart values are strings by nature: "2" is n=2, "true" is stream=True."""
    fields = {"prompt": "p", "n": "2", "seed": "7", "stream": "true", "guidance_scale": "3"}
    req = openai_edits.parse_fields(fields, variation=False)
    assert (req.n, req.seed, req.stream, req.guidance_scale) == (2, 7, True, 3.0)


def test_a1111_stays_lax_as_its_fastapi_models_are() -> None:
    req = a1111.parse({"prompt": "p", "steps": "4", "batch_size": "2", "restore_faces": "true"})
    assert (req.steps, req.batch_size) == (4, 2)
    # A value that is no number at all is still A1111's 422.
    with pytest.raises(APIError) as info:
        a1111.parse({"prompt": "p", "steps": "many"})
    assert (info.value.status, info.value.param) == (422, "steps")
