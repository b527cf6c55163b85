"""A small JSON Schema checker for the answers of `custom` jobs.

Not a full JSON Schema implementation (no new dependency for one task): it checks the
keywords response schemas commonly use, and ignores the others, as JSON Schema does with
unknown keywords:

    type (a name or a list of names), enum, const, properties, required,
    additionalProperties (false or a schema), items (a schema), prefixItems,
    minItems, maxItems, minLength, maxLength, minimum, maximum, anyOf, nullable

`find_violation(data, schema)` returns the first violation with its path (``$``,
``$.name``, ``$.items[2]``) or None. `schema_problem(schema)` says why a schema itself
is unusable (unknown type name, misshapen keyword, nesting too deep) or None.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

__all__ = ["MAX_SCHEMA_DEPTH", "SchemaViolation", "find_violation", "schema_problem"]

# deeper schemas are not written by people; the limit keeps the checks off Python's
# recursion limit
MAX_SCHEMA_DEPTH = 64

_TYPE_NAMES = frozenset({"null", "boolean", "integer", "number", "string", "array", "object"})
_SUBSCHEMA_MAPS = ("properties",)
_SUBSCHEMA_LISTS = ("prefixItems", "anyOf")
_COUNTS = ("minItems", "maxItems", "minLength", "maxLength")
_BOUNDS = ("minimum", "maximum")


@dataclass(frozen=True)
class SchemaViolation:
    path: str
    message: str

    def __str__(self) -> str:
        return f"{self.path}: {self.message}"


def find_violation(data: Any, schema: Mapping[str, Any]) -> SchemaViolation | None:
    """The first place where ``data`` breaks ``schema``, or None when it conforms."""
    return _check(data, schema, "$")


def schema_problem(schema: Any) -> str | None:
    """Why ``schema`` cannot be used to check answers, or None when it can."""
    return _schema_problem(schema, "$", 0)


def _check(data: Any, schema: Mapping[str, Any], path: str) -> SchemaViolation | None:
    if data is None and schema.get("nullable") is True:
        return None  # the OpenAPI-style spelling Gemini's own schemas use
    if "type" in schema:
        names = [schema["type"]] if isinstance(schema["type"], str) else schema["type"]
        if not any(_is_type(data, name) for name in names):
            wanted = " or ".join(names)
            return SchemaViolation(path, f"expected {wanted}, got {_type_name(data)}")
    if "enum" in schema and not any(_same(data, option) for option in schema["enum"]):
        return SchemaViolation(path, f"{_short(data)} is not one of {_short(schema['enum'])}")
    if "const" in schema and not _same(data, schema["const"]):
        return SchemaViolation(path, f"{_short(data)} is not {_short(schema['const'])}")
    if "anyOf" in schema and all(_check(data, o, path) is not None for o in schema["anyOf"]):
        return SchemaViolation(path, "matches none of the anyOf schemas")
    if isinstance(data, dict):
        return _check_object(data, schema, path)
    if isinstance(data, list):
        return _check_array(data, schema, path)
    if isinstance(data, str):
        return _check_count(len(data), schema, "minLength", "maxLength", "characters", path)
    if _is_type(data, "number"):
        if "minimum" in schema and data < schema["minimum"]:
            return SchemaViolation(path, f"{data} is less than the minimum {schema['minimum']}")
        if "maximum" in schema and data > schema["maximum"]:
            return SchemaViolation(path, f"{data} is more than the maximum {schema['maximum']}")
    return None


def _check_object(
    data: dict[str, Any], schema: Mapping[str, Any], path: str
) -> SchemaViolation | None:
    for name in schema.get("required", ()):
        if name not in data:
            return SchemaViolation(path, f"missing required property {name!r}")
    properties: Mapping[str, Any] = schema.get("properties", {})
    extra = schema.get("additionalProperties", True)
    for name, value in data.items():
        child = _child_path(path, name)
        if name in properties:
            violation = _check(value, properties[name], child)
        elif extra is False:
            violation = SchemaViolation(child, "property not allowed (additionalProperties)")
        elif isinstance(extra, Mapping):
            violation = _check(value, extra, child)
        else:
            violation = None
        if violation:
            return violation
    return None


def _check_array(data: list[Any], schema: Mapping[str, Any], path: str) -> SchemaViolation | None:
    violation = _check_count(len(data), schema, "minItems", "maxItems", "items", path)
    if violation:
        return violation
    prefix: list[Any] = schema.get("prefixItems", [])
    for index, value in enumerate(data):
        item_schema = prefix[index] if index < len(prefix) else schema.get("items")
        if isinstance(item_schema, Mapping):
            violation = _check(value, item_schema, f"{path}[{index}]")
            if violation:
                return violation
    return None


def _check_count(
    count: int, schema: Mapping[str, Any], low: str, high: str, unit: str, path: str
) -> SchemaViolation | None:
    if low in schema and count < schema[low]:
        return SchemaViolation(path, f"has {count} {unit}, fewer than {low} {schema[low]}")
    if high in schema and count > schema[high]:
        return SchemaViolation(path, f"has {count} {unit}, more than {high} {schema[high]}")
    return None


def _is_type(data: Any, name: str) -> bool:
    if name == "null":
        return data is None
    if name == "boolean":
        return isinstance(data, bool)
    if name == "integer":
        # JSON Schema: 2.0 is an integer; true is not
        if isinstance(data, float):
            return math.isfinite(data) and data.is_integer()
        return isinstance(data, int) and not isinstance(data, bool)
    if name == "number":
        return isinstance(data, int | float) and not isinstance(data, bool)
    if name == "string":
        return isinstance(data, str)
    if name == "array":
        return isinstance(data, list)
    if name == "object":
        return isinstance(data, dict)
    return False


def _type_name(data: Any) -> str:
    for name in ("null", "boolean", "integer", "number", "string", "array", "object"):
        if _is_type(data, name):
            return name
    return type(data).__name__


def _same(data: Any, option: Any) -> bool:
    # JSON equality: 1 == 1.0, but true != 1 (Python's == says True == 1)
    if isinstance(data, bool) or isinstance(option, bool):
        return isinstance(data, bool) and isinstance(option, bool) and data == option
    if isinstance(data, list) and isinstance(option, list):
        return len(data) == len(option) and all(map(_same, data, option))
    if isinstance(data, dict) and isinstance(option, dict):
        return data.keys() == option.keys() and all(_same(data[k], option[k]) for k in data)
    if _is_type(data, "number") and _is_type(option, "number"):
        return bool(data == option)
    return type(data) is type(option) and bool(data == option)


def _child_path(path: str, name: str) -> str:
    return f"{path}.{name}" if name.isidentifier() else f"{path}[{json.dumps(name)}]"


def _short(value: Any, limit: int = 80) -> str:
    text = json.dumps(value, ensure_ascii=False)
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _schema_problem(schema: Any, path: str, depth: int) -> str | None:
    if depth > MAX_SCHEMA_DEPTH:
        return f"{path}: nested deeper than {MAX_SCHEMA_DEPTH} levels"
    if not isinstance(schema, Mapping):
        return f"{path}: a schema must be an object"
    problem = _keyword_problem(schema, path)
    if problem:
        return problem
    children: list[tuple[str, Any]] = []
    for keyword in _SUBSCHEMA_MAPS:
        children += [(f"{path}.{keyword}.{n}", s) for n, s in schema.get(keyword, {}).items()]
    for keyword in _SUBSCHEMA_LISTS:
        children += [(f"{path}.{keyword}[{i}]", s) for i, s in enumerate(schema.get(keyword, []))]
    for keyword in ("items", "additionalProperties"):
        if isinstance(schema.get(keyword), Mapping):
            children.append((f"{path}.{keyword}", schema[keyword]))
    for child_path, child in children:
        problem = _schema_problem(child, child_path, depth + 1)
        if problem:
            return problem
    return None


def _keyword_problem(schema: Mapping[str, Any], path: str) -> str | None:
    if "type" in schema:
        names = schema["type"]
        names = [names] if isinstance(names, str) else names
        if not isinstance(names, list) or not names:
            return f"{path}.type: must be a type name or a list of them"
        unknown = [n for n in names if not isinstance(n, str) or n not in _TYPE_NAMES]
        if unknown:
            return f"{path}.type: unknown type {unknown[0]!r} (one of {sorted(_TYPE_NAMES)})"
    for keyword in _SUBSCHEMA_MAPS:
        if keyword in schema and not isinstance(schema[keyword], Mapping):
            return f"{path}.{keyword}: must be an object of schemas"
    for keyword in (*_SUBSCHEMA_LISTS, "enum"):
        if keyword in schema and not isinstance(schema[keyword], list):
            return f"{path}.{keyword}: must be a list"
    if "required" in schema and not (
        isinstance(schema["required"], list) and all(isinstance(n, str) for n in schema["required"])
    ):
        return f"{path}.required: must be a list of property names"
    if "items" in schema and not isinstance(schema["items"], Mapping):
        return f"{path}.items: must be a schema (use prefixItems for tuples)"
    extra = schema.get("additionalProperties", True)
    if not isinstance(extra, bool | Mapping):
        return f"{path}.additionalProperties: must be a boolean or a schema"
    for keyword in _COUNTS:
        value = schema.get(keyword, 0)
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            return f"{path}.{keyword}: must be a non-negative integer"
    for keyword in _BOUNDS:
        value = schema.get(keyword, 0)
        if isinstance(value, bool) or not isinstance(value, int | float):
            return f"{path}.{keyword}: must be a number"
    return None
