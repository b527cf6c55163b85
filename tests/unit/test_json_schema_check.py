"""tasks.json_schema_check: the first violation of a response schema, with its path."""

from __future__ import annotations

from typing import Any

import pytest

from tasks.json_schema_check import MAX_SCHEMA_DEPTH, find_violation, schema_problem

PERSON = {
    "type": "object",
    "properties": {
        "name": {"type": "string", "minLength": 1},
        "age": {"type": "integer", "minimum": 0},
        "tags": {"type": "array", "items": {"type": "string", "enum": ["a", "b"]}, "maxItems": 2},
        "pet": {
            "type": "object",
            "properties": {"kind": {"type": "string"}},
            "required": ["kind"],
            "additionalProperties": False,
        },
        "nickname": {"type": ["string", "null"]},
        "score": {"type": "number", "nullable": True, "maximum": 1},
    },
    "required": ["name", "age"],
}

# (schema, data, path of the first violation or None)
CASES = [
    pytest.param(PERSON, {"name": "Ann", "age": 3}, None, id="minimal-valid"),
    pytest.param(
        PERSON,
        {
            "name": "Ann",
            "age": 3.0,
            "tags": ["a", "b"],
            "pet": {"kind": "cat"},
            "nickname": None,
            "score": 0.5,
            "extra": "allowed at the top",
        },
        None,
        id="full-valid",
    ),
    pytest.param(PERSON, {"name": "Ann"}, "$", id="missing-required"),
    pytest.param(PERSON, {"name": "Ann", "age": "3"}, "$.age", id="string-for-integer"),
    pytest.param(PERSON, {"name": "Ann", "age": True}, "$.age", id="bool-is-not-integer"),
    pytest.param(PERSON, {"name": "Ann", "age": 2.5}, "$.age", id="fraction-is-not-integer"),
    pytest.param(PERSON, {"name": "Ann", "age": -1}, "$.age", id="below-minimum"),
    pytest.param(PERSON, {"name": "", "age": 1}, "$.name", id="too-short"),
    pytest.param(PERSON, {"name": "A", "age": 1, "tags": ["a", "c"]}, "$.tags[1]", id="enum"),
    pytest.param(
        PERSON, {"name": "A", "age": 1, "tags": ["a", "a", "b"]}, "$.tags", id="max-items"
    ),
    pytest.param(PERSON, {"name": "A", "age": 1, "pet": {}}, "$.pet", id="nested-required"),
    pytest.param(
        PERSON,
        {"name": "A", "age": 1, "pet": {"kind": "cat", "legs": 4}},
        "$.pet",
        id="additional-properties-false",
    ),
    pytest.param(PERSON, {"name": "A", "age": 1, "nickname": 3}, "$.nickname", id="type-list"),
    pytest.param(PERSON, {"name": "A", "age": 1, "score": 2}, "$.score", id="above-maximum"),
    pytest.param(PERSON, [], "$", id="array-for-object"),
    pytest.param({"type": "array"}, [1, "x", None], None, id="array-without-items"),
    pytest.param(
        {"type": "array", "items": {"type": "number"}}, [1, 2.5, True], "$[2]", id="bool-in-numbers"
    ),
    pytest.param(
        {"type": "object", "additionalProperties": {"type": "integer"}},
        {"a": 1, "b c": "x"},
        '$["b c"]',
        id="additional-properties-schema-and-quoted-path",
    ),
    pytest.param({"type": "string", "enum": ["x"]}, "x", None, id="enum-ok"),
    pytest.param({"enum": [1, "1"]}, True, "$", id="true-is-not-1-in-enum"),
    pytest.param({"enum": [1]}, 1.0, None, id="1.0-equals-1-in-enum"),
    pytest.param({"const": {"a": [1, 2]}}, {"a": [1, 2]}, None, id="const-deep-equal"),
    pytest.param({"const": {"a": [1, 2]}}, {"a": [2, 1]}, "$", id="const-differs"),
    pytest.param(
        {"anyOf": [{"type": "string"}, {"type": "integer"}]}, 3, None, id="any-of-matches"
    ),
    pytest.param({"anyOf": [{"type": "string"}, {"type": "integer"}]}, 3.5, "$", id="any-of-none"),
    pytest.param(
        {"type": "array", "prefixItems": [{"type": "string"}], "items": {"type": "integer"}},
        ["x", 1, "y"],
        "$[2]",
        id="prefix-items-then-items",
    ),
    pytest.param({"type": "array", "minItems": 1}, [], "$", id="min-items"),
    pytest.param({"type": "string", "maxLength": 2}, "abc", "$", id="max-length"),
    pytest.param({"type": "null"}, None, None, id="null"),
    pytest.param({"type": "object", "unknownKeyword": 1}, {}, None, id="unknown-keyword-ignored"),
]


@pytest.mark.parametrize(("schema", "data", "path"), CASES)
def test_first_violation_and_its_path(schema: dict[str, Any], data: Any, path: str | None) -> None:
    violation = find_violation(data, schema)
    assert (violation.path if violation else None) == path


@pytest.mark.parametrize(("schema", "data", "path"), CASES)
def test_agrees_with_the_jsonschema_library(
    schema: dict[str, Any], data: Any, path: str | None
) -> None:
    jsonschema = pytest.importorskip("jsonschema")
    if "nullable" in str(schema):
        # "nullable" is the OpenAPI spelling; standard JSON Schema ignores it
        data_ok_here = find_violation(data, schema) is None
        assert data_ok_here == (path is None)
        return
    assert jsonschema.Draft202012Validator(schema).is_valid(data) == (path is None)


def test_violation_message_names_path_and_problem() -> None:
    violation = find_violation({"name": "A", "age": "3"}, PERSON)
    assert str(violation) == "$.age: '3' is not of type 'integer'"


@pytest.mark.parametrize(
    ("schema", "problem"),
    [
        pytest.param({"type": "strng"}, "$.type: unknown type 'strng'", id="unknown-type"),
        pytest.param({"type": "STRING"}, "$.type: unknown type 'STRING'", id="upper-case-type"),
        pytest.param({"type": []}, "$.type: [] should be non-empty", id="empty-type-list"),
        pytest.param({"type": "object", "properties": []}, "$.properties:", id="properties-list"),
        pytest.param(
            {"type": "object", "properties": {"a": {"type": "nope"}}},
            "$.properties.a.type: unknown type 'nope'",
            id="nested-unknown-type",
        ),
        pytest.param({"type": "object", "required": "a"}, "$.required:", id="required-string"),
        pytest.param({"type": "array", "items": [{}]}, "$.items:", id="tuple-items"),
        pytest.param({"type": "array", "items": 3}, "$.items:", id="items-not-schema"),
        pytest.param({"type": "string", "enum": "a"}, "$.enum:", id="enum-not-list"),
        pytest.param({"type": "array", "minItems": -1}, "$.minItems:", id="negative-count"),
        pytest.param({"type": "number", "maximum": "9"}, "$.maximum:", id="bound-not-number"),
        pytest.param(
            {"type": "object", "additionalProperties": "no"},
            "$.additionalProperties:",
            id="additional-properties-string",
        ),
        pytest.param({"anyOf": [3]}, "$.anyOf[0]:", id="any-of-item"),
        pytest.param(
            {"$ref": "https://example.com/schema.json"},
            "$.$ref: only references inside the schema",
            id="remote-ref",
        ),
        pytest.param(
            {"type": "string", "format": "uri"}, "$.format: 'uri' is not checked", id="format"
        ),
        pytest.param("not a schema", "$: a schema must be an object", id="not-an-object"),
    ],
)
def test_schema_problem(schema: Any, problem: str) -> None:
    found = schema_problem(schema)
    assert found is not None
    assert found.startswith(problem)


def test_schema_nested_too_deep_is_a_problem() -> None:
    schema: dict[str, Any] = {"type": "string"}
    for _ in range(MAX_SCHEMA_DEPTH + 1):
        schema = {"type": "array", "items": schema}
    found = schema_problem(schema)
    assert found is not None
    assert "nested deeper than" in found


def test_usable_schema_has_no_problem() -> None:
    assert schema_problem(PERSON) is None


# Constraints the earlier hand-written checker let through: every one is enforced now.
ENFORCED = [
    pytest.param({"type": "string", "pattern": "^[A-Z]{3}$"}, "EUR", "eur", id="pattern"),
    pytest.param({"type": "number", "exclusiveMinimum": 0}, 0.5, 0, id="exclusive-minimum"),
    pytest.param(
        {"oneOf": [{"type": "integer"}, {"type": "number", "minimum": 10}]},
        3,
        12,  # matches both: not exactly one
        id="one-of",
    ),
    pytest.param(
        {
            "$defs": {"money": {"type": "object", "required": ["amount"]}},
            "type": "object",
            "properties": {"total": {"$ref": "#/$defs/money"}},
        },
        {"total": {"amount": 1}},
        {"total": {}},
        id="local-ref",
    ),
    pytest.param(
        {"type": "object", "patternProperties": {"^x-": {"type": "integer"}}},
        {"x-a": 1},
        {"x-a": "one"},
        id="pattern-properties",
    ),
    pytest.param({"type": "string", "format": "email"}, "a@b.example", "no-at", id="format"),
]


@pytest.mark.parametrize(("schema", "good", "bad"), ENFORCED)
def test_constraints_are_enforced(schema: dict[str, Any], good: Any, bad: Any) -> None:
    assert schema_problem(schema) is None
    assert find_violation(good, schema) is None
    assert find_violation(bad, schema) is not None


def test_a_catastrophic_pattern_is_a_violation_not_a_hang() -> None:
    import time

    schema = {"type": "string", "pattern": "^(a|aa)+$"}
    started = time.monotonic()
    violation = find_violation("a" * 40 + "!", schema)
    assert violation is not None and "took over" in violation.message
    assert time.monotonic() - started < 5
