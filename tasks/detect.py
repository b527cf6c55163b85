"""detect: one image -> labelled boxes (``{"objects": [{"label", "box_2d", "box"}, ...]}``).

The request follows Google's spatial-understanding cookbook (its prompt wording and its
bounding-box system instruction), with ``spatial=True`` and a response schema. The parser
reads what models really return (fences, prose, wrapper objects, cut-off lists) through
`tasks.model_json`, and keeps each usable box; every item it drops or changes is named in
a warning, and an answer with no usable box at all is an error, never an empty result.

`parse_detections` is public so that segmentation can reuse it and add masks.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from tasks.base import (
    ImageSize,
    ModelRequest,
    TaskOutput,
    TaskSpec,
    VisionTask,
    check_common,
    prompt_or_none,
)
from tasks.errors import InvalidJob, ModelOutputInvalid
from tasks.geometry import Box2D, InvalidBox2D, XyxyPx, box_2d_to_xyxy_px, normalize_box_2d
from tasks.model_json import extract_item_list

DEFAULT_TARGET = "the prominent items"
LABEL_MAX_CHARS = 200
# the label of a box whose label is empty or null: the box is still an answer
EMPTY_LABEL = "object"
# per-item warnings beyond this many are summarized, so a runaway answer cannot flood
# the result's warnings
MAX_ITEM_WARNINGS = 10

SYSTEM_INSTRUCTION = (
    "Return bounding boxes as a JSON array with labels. Never return masks or code fencing. "
    "Limit to {max_items} objects.\n"
    "If an object is present multiple times, name them according to their unique "
    "characteristic (colors, size, position, unique characteristics, etc..)."
)


@dataclass(frozen=True)
class Detection:
    """One usable box. ``item`` is the model's own object (segment reads its ``mask``)."""

    label: str
    box_2d: Box2D
    box_xyxy_px: XyxyPx
    item: Mapping[str, Any]

    def to_output(self) -> dict[str, Any]:
        return {"label": self.label, "box_2d": list(self.box_2d), "box": list(self.box_xyxy_px)}


@dataclass(frozen=True)
class Detections:
    objects: list[Detection]
    warnings: list[str]


class DetectTask:
    name: str = "detect"
    min_images: int = 1
    max_images: int = 1

    def check(self, spec: TaskSpec) -> None:
        check_common(self, spec)
        check_max_items(spec)

    def build_request(self, spec: TaskSpec) -> ModelRequest:
        return ModelRequest(
            prompt=detection_prompt(spec),
            system_instruction=SYSTEM_INSTRUCTION.format(max_items=spec.max_items),
            response_json_schema=detections_schema(spec.max_items),
            spatial=True,
        )

    def parse(self, text: str, spec: TaskSpec, images: Sequence[ImageSize]) -> TaskOutput:
        if len(images) != 1:
            raise ValueError(f"detect reads boxes on exactly 1 image, got {len(images)} sizes")
        found = parse_detections(text, images[0], spec.max_items)
        return TaskOutput(
            output={"objects": [d.to_output() for d in found.objects]}, warnings=found.warnings
        )


def check_max_items(spec: TaskSpec) -> None:
    max_items = spec.max_items
    if isinstance(max_items, bool) or not isinstance(max_items, int) or max_items < 1:
        raise InvalidJob(
            f"options.max_items must be a positive integer, got {max_items!r}",
            field="options.max_items",
        )


def detection_prompt(spec: TaskSpec) -> str:
    """The cookbook's wording: "Detect the 2d bounding boxes of <what> ..."."""
    target = (prompt_or_none(spec) or DEFAULT_TARGET).rstrip(" .")
    return (
        f'Detect the 2d bounding boxes of {target} (with "label" as a short description of '
        f"each one). Limit to {spec.max_items} objects."
    )


def detections_schema(max_items: int) -> dict[str, Any]:
    """Response schema: a list of at most ``max_items`` ``{box_2d: [4 ints], label}``."""
    return {
        "type": "array",
        "maxItems": max_items,
        "items": {
            "type": "object",
            "properties": {
                "box_2d": {
                    "type": "array",
                    "items": {"type": "integer"},
                    "minItems": 4,
                    "maxItems": 4,
                },
                "label": {"type": "string"},
            },
            "required": ["box_2d", "label"],
        },
    }


def parse_detections(text: str, image_size: ImageSize, max_items: int) -> Detections:
    """The usable boxes in the model's text, in the model's order, at most ``max_items``.

    Raises ModelOutputInvalid when the text holds no JSON list, when the list holds no
    object, or when it holds items but none of them is a usable box.
    """
    found = extract_item_list(text)
    warnings = list(found.warnings)
    if found.items and not any(isinstance(item, dict) for item in found.items):
        raise ModelOutputInvalid(
            "model output is a JSON list without objects (expected {box_2d, label} objects)",
            raw_text=text,
        )
    objects: list[Detection] = []
    problems: list[str] = []
    for index, item in enumerate(found.items):
        try:
            detection, note = _read_item(item, image_size)
        except _Dropped as dropped:
            problems.append(f"dropped item {index}: {dropped}")
            continue
        if note:
            problems.append(f"item {index}: {note}")
        objects.append(detection)
    if found.items and not objects:
        raise ModelOutputInvalid(
            f"none of the model's {len(found.items)} items is a usable box "
            f"(first problem: {problems[0]})",
            raw_text=text,
        )
    warnings.extend(_summarized(problems))
    if len(objects) > max_items:
        warnings.append(f"kept the first {max_items} of {len(objects)} objects (options.max_items)")
        objects = objects[:max_items]
    return Detections(objects=objects, warnings=warnings)


class _Dropped(Exception):
    """An item that is not a usable box; the message is why."""


def _read_item(item: Any, image_size: ImageSize) -> tuple[Detection, str | None]:
    if not isinstance(item, dict):
        raise _Dropped(f"not an object: {_short(item)}")
    if "box_2d" not in item:
        keys = ", ".join(_short(str(key), 40) for key in list(item)[:10])
        raise _Dropped(f"no box_2d (keys: {keys})")
    try:
        box_2d = normalize_box_2d(item["box_2d"])
    except InvalidBox2D as exc:
        raise _Dropped(str(exc)) from None
    # a box without a "label" key is still an answer (seen in real output): like a null one
    label, note = _read_label(item["label"]) if "label" in item else _missing_label()
    box_xyxy_px = box_2d_to_xyxy_px(box_2d, image_size.width_px, image_size.height_px)
    return Detection(label=label, box_2d=box_2d, box_xyxy_px=box_xyxy_px, item=item), note


def _missing_label() -> tuple[str, str]:
    return EMPTY_LABEL, f'no label; labelled "{EMPTY_LABEL}"'


def _read_label(value: Any) -> tuple[str, str | None]:
    if value is None:
        return EMPTY_LABEL, f'label is null; labelled "{EMPTY_LABEL}"'
    if isinstance(value, str):
        label = value.strip()
    elif isinstance(value, dict | list):
        label = json.dumps(value, ensure_ascii=False)
    else:
        label = str(value)
    if not label:
        return EMPTY_LABEL, f'label is empty; labelled "{EMPTY_LABEL}"'
    if len(label) > LABEL_MAX_CHARS:
        return label[:LABEL_MAX_CHARS], (
            f"label of {len(label)} characters cut to {LABEL_MAX_CHARS}"
        )
    return label, None


def _summarized(problems: list[str]) -> list[str]:
    if len(problems) <= MAX_ITEM_WARNINGS:
        return problems
    more = len(problems) - MAX_ITEM_WARNINGS
    return [*problems[:MAX_ITEM_WARNINGS], f"... and {more} more item problems like these"]


def _short(value: Any, limit: int = 80) -> str:
    text = json.dumps(value, ensure_ascii=False)
    return text if len(text) <= limit else text[: limit - 1] + "…"


TASK: VisionTask = DetectTask()
