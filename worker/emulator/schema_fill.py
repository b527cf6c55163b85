"""Produce a JSON value that conforms to a response schema, filled from the scene.

Both schema dialects the API takes are handled: `responseJsonSchema` (JSON Schema: lower-case
types, `$ref`/`$defs`, type lists with "null") and `responseSchema` (the OpenAPI subset:
upper-case types, `nullable`, `propertyOrdering`). Every property is filled (so `required`
always holds), enums always get one of their values, `minItems`/`maxItems` and
`minimum`/`maximum` are respected.

Values come from the scene where the property name suggests it: counts for `count`/`number`
integers, labels for string arrays, the caption for free text, enum values that name a
colour or kind present in the image (this is also how classification by enum works), and
per-shape objects for arrays of objects (one per shape: `box_2d`, `label`, `colour`, ...).
Anything else gets a plain generic value.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from worker.emulator.palette import COLOUR_SYNONYMS, KIND_SYNONYMS
from worker.emulator.vision import SeenShape
from worker.emulator.wording import (
    mentioned_colours,
    mentioned_kinds,
    position_phrase,
    select_shapes,
    with_article,
    words,
)

_COUNT_WORDS = {"count", "number", "num", "total", "quantity", "amount", "n", "how", "many"}
_TEXT_WORDS = {"caption", "description", "describe", "summary", "text", "answer", "alt",
               "explanation", "reason", "reasoning", "comment", "notes", "scene"}  # fmt: skip
_LABEL_WORDS = {"label", "labels", "name", "names", "object", "objects", "item", "items",
                "title", "tag", "tags", "class", "classes", "category", "categories"}  # fmt: skip
_KIND_WORDS = {"kind", "kinds", "shape", "shapes", "type", "types", "form"}
_COLOUR_WORDS = {"colour", "colours", "color", "colors"}
_SCORE_WORDS = {"confidence", "score", "probability", "certainty", "likelihood"}
_BOX_NAMES = {"box_2d", "box", "bbox", "bounding_box", "box2d", "boundingbox"}
_MASK_NAMES = {"mask", "segmentation", "segmentation_mask"}


@dataclass(frozen=True)
class SceneFacts:
    shapes: Sequence[SeenShape]
    caption: str
    mask_encoder: Callable[[SeenShape], str]


def fill_schema(schema: Any, facts: SceneFacts) -> Any:
    return _Filler(schema, facts).fill(schema, name="", shape=None)


def enum_matches(values: Sequence[Any], shapes: Sequence[SeenShape]) -> list[Any]:
    """The enum values that name a colour, kind or label present among `shapes`
    ("square" counts as a rectangle, "oval" as an ellipse)."""
    labels = {s.label for s in shapes}
    matched = []
    for value in values:
        if not isinstance(value, str):
            continue
        value_words = words(value)
        named_colours = {COLOUR_SYNONYMS[w] for w in value_words if w in COLOUR_SYNONYMS}
        named_kinds = {KIND_SYNONYMS[w] for w in value_words if w in KIND_SYNONYMS}
        names_present = (named_colours or named_kinds) and select_shapes(
            shapes, named_colours, named_kinds
        )
        if value.lower() in labels or names_present:
            matched.append(value)
    return matched


class _Filler:
    def __init__(self, root: Any, facts: SceneFacts) -> None:
        self.root = root
        self.facts = facts

    def fill(self, schema: Any, name: str, shape: SeenShape | None, depth: int = 0) -> Any:
        if depth > 12 or not isinstance(schema, dict):
            return None
        schema = self._resolve(schema)
        for combinator in ("anyOf", "oneOf", "any_of", "one_of"):
            options = schema.get(combinator)
            if isinstance(options, list) and options:
                non_null = [o for o in options if _type_of(self._resolve(o)) != "null"]
                return self.fill((non_null or options)[0], name, shape, depth + 1)
        if isinstance(schema.get("allOf"), list) and schema["allOf"]:
            return self.fill(schema["allOf"][0], name, shape, depth + 1)
        if "const" in schema:
            return schema["const"]
        if isinstance(schema.get("enum"), list) and schema["enum"]:
            return self._choose_enum(schema["enum"], shape)
        kind = _type_of(schema)
        if kind == "object":
            return self._object(schema, shape, depth)
        if kind == "array":
            return self._array(schema, name, shape, depth)
        if kind == "string":
            return self._string(schema, name, shape)
        if kind == "integer":
            return int(self._number(schema, name, shape))
        if kind == "number":
            return float(self._number(schema, name, shape))
        if kind == "boolean":
            return self._boolean(name, shape)
        return None

    def _resolve(self, schema: dict[str, Any]) -> dict[str, Any]:
        ref = schema.get("$ref")
        if not isinstance(ref, str) or not ref.startswith("#/"):
            return schema
        target: Any = self.root
        for part in ref[2:].split("/"):
            target = target.get(part) if isinstance(target, dict) else None
        return target if isinstance(target, dict) else {}

    def _object(self, schema: dict[str, Any], shape: SeenShape | None, depth: int) -> Any:
        properties = schema.get("properties")
        if not isinstance(properties, dict) or not properties:
            return {"description": self.facts.caption}
        ordering = schema.get("propertyOrdering") or schema.get("property_ordering") or []
        names = [n for n in ordering if n in properties]
        names += [n for n in properties if n not in names]
        return {n: self.fill(properties[n], n, shape, depth + 1) for n in names}

    def _array(self, schema: dict[str, Any], name: str, shape: SeenShape | None, depth: int) -> Any:
        items = schema.get("items")
        item_schema = self._resolve(items) if isinstance(items, dict) else {}
        item_type = _type_of(item_schema)
        name_words = set(_name_words(name))
        values: list[Any]
        if name.lower() in _BOX_NAMES and item_type in ("integer", "number"):
            target = shape or (self.facts.shapes[0] if self.facts.shapes else None)
            values = target.box_2d() if target else [0, 0, 1000, 1000]
        elif isinstance(item_schema.get("enum"), list) and item_schema["enum"]:
            pool = [shape] if shape else self._shapes_named_by(name)
            values = enum_matches(item_schema["enum"], pool)
        elif item_type == "object" or "properties" in item_schema:
            pool = [shape] if shape else self._shapes_named_by(name)
            values = [self.fill(item_schema, name, s, depth + 1) for s in pool]
        elif item_type == "string":
            pool = [shape] if shape else self._shapes_named_by(name)
            if name_words & _COLOUR_WORDS:
                values = list(dict.fromkeys(s.colour_name for s in pool))
            elif name_words & _KIND_WORDS and not name_words & _LABEL_WORDS:
                values = list(dict.fromkeys(s.kind for s in pool))
            else:
                values = [s.label for s in pool]
        elif item_type in ("integer", "number"):
            values = [self.fill(item_schema, name, shape, depth + 1)]
        else:
            values = []
        return self._fit_length(schema, item_schema, name, shape, values, depth)

    def _fit_length(
        self,
        schema: dict[str, Any],
        item_schema: dict[str, Any],
        name: str,
        shape: SeenShape | None,
        values: list[Any],
        depth: int,
    ) -> list[Any]:
        min_items = _int_or(schema.get("minItems", schema.get("min_items")), 0) or 0
        max_items = _int_or(schema.get("maxItems", schema.get("max_items")), None)
        if max_items is not None:
            values = values[:max_items]
        while len(values) < min_items:
            values.append(self.fill(item_schema, name, shape, depth + 1))
        return values

    def _string(self, schema: dict[str, Any], name: str, shape: SeenShape | None) -> str:
        name_words = set(_name_words(name))
        text: str
        if name.lower() in _MASK_NAMES and shape is not None:
            text = self.facts.mask_encoder(shape)
        elif name_words & _COLOUR_WORDS:
            target = shape or (self.facts.shapes[0] if self.facts.shapes else None)
            text = target.colour_name if target else "none"
        elif name_words & _KIND_WORDS and not name_words & _LABEL_WORDS:
            target = shape or (self.facts.shapes[0] if self.facts.shapes else None)
            text = target.kind if target else "none"
        elif shape is not None and name_words & _TEXT_WORDS:
            text = f"{with_article(shape.label)} {position_phrase(shape)}".capitalize()
        elif shape is not None:
            text = shape.label
        elif name_words & _LABEL_WORDS and not name_words & _TEXT_WORDS:
            text = self.facts.shapes[0].label if self.facts.shapes else "none"
        else:
            text = self.facts.caption
        max_length = _int_or(schema.get("maxLength", schema.get("max_length")), None)
        return text[:max_length] if max_length is not None else text

    def _number(self, schema: dict[str, Any], name: str, shape: SeenShape | None) -> float:
        name_words = set(_name_words(name))
        value: float
        if name_words & _SCORE_WORDS:
            value = 0.95
        elif name_words & _COUNT_WORDS or name.lower().startswith(("n_", "num")):
            value = len(self._shapes_named_by(name))
        else:
            value = 0
        minimum = schema.get("minimum")
        maximum = schema.get("maximum")
        if isinstance(minimum, int | float) and value < minimum:
            value = minimum
        if isinstance(maximum, int | float) and value > maximum:
            value = maximum
        return value

    def _boolean(self, name: str, shape: SeenShape | None) -> bool:
        pool = [shape] if shape else self.facts.shapes
        return bool(select_shapes(pool, mentioned_colours(name), mentioned_kinds(name)))

    def _choose_enum(self, values: list[Any], shape: SeenShape | None) -> Any:
        # one value to pick: the one naming the biggest shape, the image's main subject
        by_size = [shape] if shape else sorted(self.facts.shapes, key=_area, reverse=True)
        for candidate in by_size:
            matched = enum_matches(values, [candidate])
            if matched:
                return matched[0]
        for value in values:
            if isinstance(value, str) and value.lower() in {"none", "other", "unknown", "no"}:
                return value
        return values[0]

    def _shapes_named_by(self, name: str) -> list[SeenShape]:
        """`red_count` counts red shapes, `circles` lists circles, `objects` everything."""
        return select_shapes(self.facts.shapes, mentioned_colours(name), mentioned_kinds(name))


def _area(shape: SeenShape) -> float:
    x_min, y_min, x_max, y_max = shape.box_xyxy_norm
    return (x_max - x_min) * (y_max - y_min) * shape.fill_ratio


def _type_of(schema: dict[str, Any]) -> str:
    declared = schema.get("type")
    if isinstance(declared, list):
        declared = next((t for t in declared if str(t).lower() != "null"), "null")
    if isinstance(declared, str):
        return declared.lower()
    if "properties" in schema:
        return "object"
    if "items" in schema:
        return "array"
    return ""


def _name_words(name: str) -> list[str]:
    # split snake_case and camelCase: "shapeCount" -> ["shape", "count"]
    spaced = "".join(f" {c}" if c.isupper() else c for c in name)
    return words(spaced.replace("_", " ").replace("-", " "))


def _int_or(value: Any, default: int | None) -> int | None:
    return int(value) if isinstance(value, int | float | str) and str(value).isdigit() else default
