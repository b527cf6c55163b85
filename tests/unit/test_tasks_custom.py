"""tasks.custom: the job's own instruction, free text or JSON checked against its schema."""

from __future__ import annotations

import json
from typing import Any

import pytest

from tasks.base import TaskSpec
from tasks.custom import RESPONSE_SCHEMA_MAX_BYTES, TASK
from tasks.errors import InvalidJob, ModelOutputInvalid

INVOICE = {
    "type": "object",
    "properties": {
        "total": {"type": "number"},
        "currency": {"type": "string", "enum": ["EUR", "USD"]},
        "lines": {
            "type": "array",
            "items": {
                "type": "object",
                "properties": {"item": {"type": "string"}, "qty": {"type": "integer"}},
                "required": ["item", "qty"],
                "additionalProperties": False,
            },
        },
    },
    "required": ["total", "currency"],
}


def custom_spec(
    schema: Any = None, prompt: str | None = "Read the invoice.", image_count: int = 1
) -> TaskSpec:
    return TaskSpec(task="custom", image_count=image_count, prompt=prompt, response_schema=schema)


def test_without_schema_the_answer_is_text() -> None:
    spec = custom_spec()
    assert TASK.build_request(spec).response_json_schema is None
    assert TASK.parse(" Total: 12 EUR \n", spec, []).output == {"text": "Total: 12 EUR"}


def test_with_schema_the_request_carries_it() -> None:
    request = TASK.build_request(custom_spec(INVOICE))
    assert request.prompt == "Read the invoice."
    assert request.response_json_schema == INVOICE


@pytest.mark.parametrize(
    ("text", "data"),
    [
        pytest.param(
            '{"total": 12.5, "currency": "EUR"}', {"total": 12.5, "currency": "EUR"}, id="bare"
        ),
        pytest.param(
            '```json\n{"total": 3, "currency": "USD", "lines": [{"item": "pen", "qty": 3}]}\n```',
            {"total": 3, "currency": "USD", "lines": [{"item": "pen", "qty": 3}]},
            id="fenced",
        ),
    ],
)
def test_with_schema_the_answer_is_checked_data(text: str, data: Any) -> None:
    result = TASK.parse(text, custom_spec(INVOICE), [])
    assert result.output == {"data": data}
    assert result.warnings == []


@pytest.mark.parametrize(
    ("text", "message"),
    [
        pytest.param('{"total": 12.5}', "at \\$: 'currency' is a required property", id="missing"),
        pytest.param(
            '{"total": 1, "currency": "GBP"}', "at \\$.currency: 'GBP' is not one of", id="enum"
        ),
        pytest.param(
            '{"total": 1, "currency": "EUR", "lines": [{"item": "pen", "qty": "3"}]}',
            "at \\$.lines\\[0\\].qty: '3' is not of type 'integer'",
            id="nested-type",
        ),
        pytest.param(
            '{"total": 1, "currency": "EUR", "lines": [{"item": "pen", "qty": 1, "vat": 0}]}',
            "at \\$.lines\\[0\\]: Additional properties are not allowed \\('vat' was unexpected",
            id="additional-property",
        ),
        pytest.param("The total is 12 EUR.", "no JSON", id="prose"),
        pytest.param('{"total": 12.5, "curr', "truncated", id="truncated"),
    ],
)
def test_answer_breaking_the_schema_is_an_error(text: str, message: str) -> None:
    with pytest.raises(ModelOutputInvalid, match=message) as caught:
        TASK.parse(text, custom_spec(INVOICE), [])
    assert caught.value.raw_text == text


@pytest.mark.parametrize(
    ("spec", "field"),
    [
        pytest.param(custom_spec(prompt=None), "prompt", id="no-prompt"),
        pytest.param(custom_spec(prompt="  "), "prompt", id="blank-prompt"),
        pytest.param(custom_spec(image_count=0), "images", id="no-image"),
        pytest.param(custom_spec(image_count=3601), "images", id="too-many-images"),
        pytest.param(custom_spec(["type"]), "response_schema", id="schema-not-object"),
        pytest.param(custom_spec({"properties": {}}), "response_schema", id="schema-without-type"),
        pytest.param(custom_spec({"type": "strng"}), "response_schema", id="unknown-type"),
        pytest.param(
            custom_spec({"type": "object", "description": "x" * RESPONSE_SCHEMA_MAX_BYTES}),
            "response_schema",
            id="schema-too-large",
        ),
        pytest.param(
            custom_spec({"type": "object", "default": {1, 2}}),
            "response_schema",
            id="schema-not-json",
        ),
        pytest.param(
            TaskSpec(task="custom", image_count=1, prompt="x", labels=("a",)),
            "labels",
            id="labels",
        ),
    ],
)
def test_check_rejects(spec: TaskSpec, field: str) -> None:
    with pytest.raises(InvalidJob, match=field) as caught:
        TASK.check(spec)
    assert caught.value.details["field"] == field


@pytest.mark.parametrize(
    "spec",
    [
        pytest.param(custom_spec(), id="no-schema"),
        pytest.param(custom_spec(INVOICE), id="schema"),
        pytest.param(custom_spec(INVOICE, image_count=3600), id="3600-images"),
    ],
)
def test_check_accepts(spec: TaskSpec) -> None:
    TASK.check(spec)


def test_schema_just_under_the_size_limit_is_accepted() -> None:
    schema = {"type": "object", "description": ""}
    overhead = len(json.dumps(schema, separators=(",", ":")))
    schema["description"] = "x" * (RESPONSE_SCHEMA_MAX_BYTES - overhead)
    TASK.check(custom_spec(schema))
