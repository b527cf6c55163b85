"""segment: one image -> labelled boxes with a mask each.

``output`` is detect's ``{"objects": [{"label", "box_2d", "box"}, ...]}``; the masks come
beside it in `TaskOutput.masks`, one `tasks.masks.BoxMask` (or None) per object, and the
shell adds each object's ``mask``, ``mask_area`` and ``mask_rle``.

The request is Google's cookbook segmentation prompt, word for word, plus the object
limit. Three choices the cookbook and the real outputs settle:

- **No system instruction.** Detect's instruction says "Never return masks"; with it in
  place a segmentation prompt got boxes only (``detect_11`` in ``fixtures/gemini_real/``).
  The cookbook's segmentation cells run without one.
- **Plain text, not JSON mode.** The guide asks in plain text and every real answer with
  PNG masks came that way (fenced JSON, which `tasks.model_json` reads). Under
  ``responseMimeType: application/json`` a placeholder mask (``"gimme_mask_for_this"``)
  has been reported, and a schema cannot say "a base64 PNG of the box" anyway.
- ``spatial=True`` (no thinking on 2.5) and ``fit_within_px=1024`` (the guide's
  ``thumbnail([1024, 1024])``): boxes and box-relative masks map back onto the original.

Boxes and labels are read exactly as detect reads them (`parse_detections`). A mask that
is missing or in a format we cannot decode costs the object its mask, never its box:
its entry in ``masks`` is None and a warning names the objects and the format.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

from tasks.base import (
    ImageSize,
    ModelRequest,
    TaskOutput,
    TaskSpec,
    VisionTask,
    check_common,
    prompt_or_none,
)
from tasks.detect import DEFAULT_TARGET, MAX_ITEM_WARNINGS, check_max_items, parse_detections
from tasks.errors import InvalidJob

if TYPE_CHECKING:
    from tasks.masks import BoxMask

__all__ = ["TASK", "SegmentTask", "segmentation_prompt"]

# the guide downsizes with thumbnail([1024, 1024]) before asking for masks
FIT_WITHIN_PX = 1024
# the contract's options.mask_threshold range: at 255 nothing could be above it
MASK_THRESHOLD_MAX_U8 = 254


class SegmentTask:
    name: str = "segment"
    min_images: int = 1
    max_images: int = 1

    def check(self, spec: TaskSpec) -> None:
        check_common(self, spec)
        check_max_items(spec)
        threshold = spec.mask_threshold_u8
        if (
            isinstance(threshold, bool)
            or not isinstance(threshold, int)
            or not 0 <= threshold <= MASK_THRESHOLD_MAX_U8
        ):
            raise InvalidJob(
                f"options.mask_threshold must be an integer 0-{MASK_THRESHOLD_MAX_U8}, "
                f"got {threshold!r}",
                field="options.mask_threshold",
            )

    def build_request(self, spec: TaskSpec) -> ModelRequest:
        return ModelRequest(
            prompt=segmentation_prompt(spec),
            system_instruction=None,
            response_json_schema=None,
            spatial=True,
            fit_within_px=FIT_WITHIN_PX,
        )

    def parse(self, text: str, spec: TaskSpec, images: Sequence[ImageSize]) -> TaskOutput:
        if len(images) != 1:
            raise ValueError(f"segment reads masks on exactly 1 image, got {len(images)} sizes")
        image = images[0]
        found = parse_detections(text, image, spec.max_items)
        # numpy and Pillow only when a mask is read: producers validating jobs (which
        # imports every task) stay light
        from tasks.masks import UnsupportedMask, decode_mask

        masks: list[BoxMask | None] = []
        failed: dict[str, list[int]] = {}  # reason -> object indexes, in order
        for index, detection in enumerate(found.objects):
            try:
                if "mask" not in detection.item:
                    raise UnsupportedMask('the item has no "mask" key')
                mask: BoxMask | None = decode_mask(
                    detection.item["mask"],
                    detection.box_xyxy_px,
                    image.width_px,
                    image.height_px,
                    threshold_u8=spec.mask_threshold_u8,
                )
            except UnsupportedMask as exc:
                failed.setdefault(str(exc), []).append(index)
                mask = None
            masks.append(mask)
        warnings = list(found.warnings)
        if found.objects and all(mask is None for mask in masks):
            warnings.append(
                f"no mask could be decoded for any of the {len(masks)} objects; "
                "their boxes and labels are kept"
            )
        warnings.extend(_mask_warnings(failed))
        return TaskOutput(
            output={"objects": [d.to_output() for d in found.objects]},
            warnings=warnings,
            masks=masks,
        )


def segmentation_prompt(spec: TaskSpec) -> str:
    """The cookbook's segmentation prompt for ``what`` (the job's prompt), plus the limit."""
    target = (prompt_or_none(spec) or DEFAULT_TARGET).rstrip(" .")
    return (
        f"Give the segmentation masks for {target}. Output a JSON list of segmentation masks "
        'where each entry contains the 2D bounding box in the key "box_2d", the segmentation '
        'mask in key "mask", and the text label in the key "label". Use descriptive labels. '
        f"Limit to {spec.max_items} objects."
    )


def _mask_warnings(failed: dict[str, list[int]]) -> list[str]:
    """One warning per reason, naming the objects it hit (bounded like detect's)."""
    warnings = [
        f"{_objects(indexes)}: no mask ({reason}); box and label kept"
        for reason, indexes in failed.items()
    ]
    if len(warnings) <= MAX_ITEM_WARNINGS:
        return warnings
    more = sum(len(indexes) for indexes in list(failed.values())[MAX_ITEM_WARNINGS:])
    return [*warnings[:MAX_ITEM_WARNINGS], f"... and {more} more objects without a mask"]


def _objects(indexes: list[int]) -> str:
    """``object 3`` or ``objects 0-2, 5`` (indexes into output["objects"])."""
    spans: list[str] = []
    start = previous = indexes[0]
    for index in [*indexes[1:], None]:
        if index is not None and index == previous + 1:
            previous = index
            continue
        spans.append(str(start) if start == previous else f"{start}-{previous}")
        if index is not None:
            start = previous = index
    noun = "object" if len(indexes) == 1 else "objects"
    return f"{noun} {', '.join(spans)}"


TASK: VisionTask = SegmentTask()
