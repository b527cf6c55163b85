"""The answers of `custom` jobs against their `response_schema`, with `jsonschema`.

A schema sent to the model is guidance that not every model or endpoint enforces, so the
answer is checked here too, by a maintained implementation of JSON Schema (draft 2020-12:
`pattern`, `oneOf`, `$ref`, `exclusiveMinimum`, ... all enforced). An earlier hand-written
checker silently ignored the keywords it did not know; here nothing a schema constrains
passes unchecked:

- `schema_problem(schema)` refuses, when the job arrives, a schema the checker could not
  enforce: one that is not valid JSON Schema, one nested too deep, a ``$ref`` to anything
  but the schema itself (nothing is fetched), a ``format`` this checker does not assert.
- `find_violation(data, schema)` returns the most relevant violation with its path
  (``$``, ``$.name``, ``$.items[2]``) or None.

Two additions to the standard: ``nullable: true`` (the OpenAPI spelling Gemini's own
schemas use) admits null beside the schema's type; and ``pattern`` / ``patternProperties``
run with a time limit (the `regex` module), because a producer's pattern runs on text a
model wrote and a catastrophic one must not hold a worker.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any, Final

import regex
from jsonschema import Draft202012Validator, ValidationError, validators
from jsonschema.exceptions import best_match
from referencing.exceptions import Unresolvable

__all__ = ["MAX_SCHEMA_DEPTH", "SchemaViolation", "find_violation", "schema_problem"]

# deeper schemas are not written by people; the limit keeps the checks off Python's
# recursion limit
MAX_SCHEMA_DEPTH: Final = 64
# one pattern on one string of a model's answer: far above any sane pattern's time
PATTERN_TIMEOUT_S: Final = 0.1

_CHECKED_FORMATS: Final = Draft202012Validator.FORMAT_CHECKER
_STANDARD_TYPE = Draft202012Validator.VALIDATORS["type"]


@dataclass(frozen=True)
class SchemaViolation:
    path: str
    message: str

    def __str__(self) -> str:
        return f"{self.path}: {self.message}"


def _type_or_nullable(
    validator: Any, types: Any, instance: Any, schema: Mapping[str, Any]
) -> Iterator[ValidationError]:
    if instance is None and schema.get("nullable") is True:
        return
    yield from _STANDARD_TYPE(validator, types, instance, schema)


def _pattern(
    validator: Any, pattern: str, instance: Any, schema: Mapping[str, Any]
) -> Iterator[ValidationError]:
    if not validator.is_type(instance, "string"):
        return
    found = _search(pattern, instance)
    if isinstance(found, ValidationError):
        yield found
    elif not found:
        yield ValidationError(f"{_short(instance)} does not match {pattern!r}")


def _pattern_properties(
    validator: Any, patterns: Mapping[str, Any], instance: Any, schema: Mapping[str, Any]
) -> Iterator[ValidationError]:
    if not validator.is_type(instance, "object"):
        return
    for pattern, subschema in patterns.items():
        for name, value in instance.items():
            found = _search(pattern, name)
            if isinstance(found, ValidationError):
                yield found
            elif found:
                yield from validator.descend(value, subschema, path=name, schema_path=pattern)


def _search(pattern: str, text: str) -> bool | ValidationError:
    try:
        return regex.search(pattern, text, timeout=PATTERN_TIMEOUT_S) is not None
    except TimeoutError:
        return ValidationError(
            f"pattern {pattern!r} took over {PATTERN_TIMEOUT_S} s on a string of "
            f"{len(text)} characters"
        )


_TYPE_NAMES: Final = frozenset(
    {"null", "boolean", "integer", "number", "string", "array", "object"}
)

_Validator = validators.extend(
    Draft202012Validator,
    {"type": _type_or_nullable, "pattern": _pattern, "patternProperties": _pattern_properties},
)
_META = _Validator(_Validator.META_SCHEMA)


def find_violation(data: Any, schema: Mapping[str, Any]) -> SchemaViolation | None:
    """The most relevant place where ``data`` breaks ``schema``, or None when it conforms.
    ``schema`` must have passed `schema_problem`."""
    validator = _Validator(schema, format_checker=_CHECKED_FORMATS)
    try:
        error = best_match(validator.iter_errors(data))
    except Unresolvable as exc:  # refused by schema_problem; never a silent pass
        return SchemaViolation("$", f"the schema's $ref cannot be resolved: {exc}")
    if error is None:
        return None
    return SchemaViolation(_path(error.absolute_path), error.message)


def schema_problem(schema: Any) -> str | None:
    """Why ``schema`` cannot be used to check answers, or None when it can."""
    if not isinstance(schema, Mapping):
        return "$: a schema must be an object"
    found = _walk_problem(schema, "$", 0)
    if found:
        return found
    error = best_match(_META.iter_errors(schema))
    if error is not None:
        return f"{_path(error.absolute_path)}: {error.message}"
    return None


def _walk_problem(node: Any, path: str, depth: int) -> str | None:
    """What the meta-schema cannot see: depth, references out of the schema, formats that
    are not asserted."""
    if depth > MAX_SCHEMA_DEPTH:
        return f"{path}: nested deeper than {MAX_SCHEMA_DEPTH} levels"
    if isinstance(node, list):
        for index, item in enumerate(node):
            found = _walk_problem(item, f"{path}[{index}]", depth + 1)
            if found:
                return found
        return None
    if not isinstance(node, Mapping):
        return None
    for keyword in ("$ref", "$dynamicRef"):
        target = node.get(keyword)
        if isinstance(target, str) and not target.startswith("#"):
            return f"{path}.{keyword}: only references inside the schema (#...) are followed"
    names = node.get("type")
    names = [names] if isinstance(names, str) else names
    if isinstance(names, list):
        unknown = [n for n in names if isinstance(n, str) and n not in _TYPE_NAMES]
        if unknown:
            return f"{path}.type: unknown type {unknown[0]!r} (one of {sorted(_TYPE_NAMES)})"
    fmt = node.get("format")
    if isinstance(fmt, str) and fmt not in _CHECKED_FORMATS.checkers:
        known = ", ".join(sorted(_CHECKED_FORMATS.checkers))
        return f"{path}.format: {fmt!r} is not checked here (checked: {known})"
    for name, value in node.items():
        found = _walk_problem(value, _child_path(path, str(name)), depth + 1)
        if found:
            return found
    return None


def _path(parts: Any) -> str:
    path = "$"
    for part in parts:
        path = f"{path}[{part}]" if isinstance(part, int) else _child_path(path, part)
    return path


def _child_path(path: str, name: str) -> str:
    return f"{path}.{name}" if name.isidentifier() else f"{path}[{json.dumps(name)}]"


def _short(value: Any, limit: int = 80) -> str:
    text = json.dumps(value, ensure_ascii=False)
    return text if len(text) <= limit else text[: limit - 1] + "…"
