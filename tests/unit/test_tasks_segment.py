"""tasks.segment over the real Gemini segmentation outputs and other mask encodings."""

from __future__ import annotations

import base64
import io
import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

from tasks import detect, registry
from tasks.base import ImageSize, TaskSpec
from tasks.errors import InvalidJob, ModelOutputInvalid
from tasks.masks import BoxMask
from tasks.segment import TASK

SEGMENT_01 = "segment_01_cookbook_cupcakes-small-items_gemini-2.5-pro-exp-03-25.txt"
SEGMENT_02 = "segment_02_cookbook_cupcakes-small-items_gemini-2.5-flash.txt"
SEG_TOKENS = "secondary/segment_usercode_seg-tokens_repo-unknown.py.txt"
CUPCAKES = ImageSize(width_px=620, height_px=620)
CUPCAKES_4X = ImageSize(width_px=2480, height_px=2480)
WIDE = ImageSize(width_px=400, height_px=200)

TOKENS_REASON = "segmentation tokens (<seg_N>) need the model's decoder"


def segment_spec(
    prompt: str | None = None, max_items: int = 25, mask_threshold_u8: int = 127
) -> TaskSpec:
    return TaskSpec(
        task="segment",
        image_count=1,
        prompt=prompt,
        max_items=max_items,
        mask_threshold_u8=mask_threshold_u8,
    )


def constant_map(value: int) -> str:
    buffer = io.BytesIO()
    Image.fromarray(np.full((256, 256), value, dtype=np.uint8)).save(buffer, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


def item(
    mask: object = None,
    box_2d: tuple[int, int, int, int] = (100, 100, 600, 500),
    label: str = "cup",
) -> Any:
    """A model item; without ``mask`` it has no "mask" key at all."""
    raw: dict[str, object] = {"box_2d": list(box_2d), "label": label}
    if mask is not None:
        raw["mask"] = mask
    return raw


# --- the real answers ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "count"),
    [
        pytest.param(SEGMENT_01, 20, id="segment_01-20-objects"),
        pytest.param(SEGMENT_02, 15, id="segment_02-15-objects"),
    ],
)
@pytest.mark.parametrize(
    "image", [pytest.param(CUPCAKES, id="620px"), pytest.param(CUPCAKES_4X, id="2480px")]
)
def test_real_answers_give_a_mask_per_object(
    gemini_real: Path, name: str, count: int, image: ImageSize
) -> None:
    text = (gemini_real / name).read_text()
    result = TASK.parse(text, segment_spec(), [image])
    assert result.warnings == []
    objects = result.output["objects"]
    assert len(objects) == count
    # boxes and labels exactly as detect reads them
    assert objects == detect.TASK.parse(text, segment_spec(), [image]).output["objects"]
    assert result.masks is not None and len(result.masks) == count
    for obj, mask in zip(objects, result.masks, strict=True):
        assert isinstance(mask, BoxMask)
        assert list(mask.box_xyxy_px) == obj["box"]
        assert mask.area_px() > 0
        assert set(obj) == {"label", "box_2d", "box"}


def test_two_objects_sharing_a_box_get_their_own_masks(gemini_real: Path) -> None:
    result = TASK.parse((gemini_real / SEGMENT_02).read_text(), segment_spec(), [CUPCAKES])
    objects = result.output["objects"]
    assert result.masks is not None
    body, lid = 3, 4
    assert objects[body]["label"] == "glass body of red jar"
    assert objects[lid]["label"] == "metal lid of red jar"
    assert objects[body]["box"] == objects[lid]["box"]
    assert not np.array_equal(result.masks[body].crop, result.masks[lid].crop)


def test_real_answer_cut_inside_a_mask_keeps_the_masks_before(gemini_real: Path) -> None:
    text = (gemini_real / SEGMENT_02).read_text()
    result = TASK.parse(text[: len(text) // 2], segment_spec(), [CUPCAKES])
    assert 0 < len(result.output["objects"]) < 15
    assert result.masks is not None
    assert all(isinstance(mask, BoxMask) for mask in result.masks)
    assert len(result.warnings) == 1
    assert "cut off" in result.warnings[0]


def test_real_lone_object_answer_gives_its_object_and_mask(gemini_real: Path) -> None:
    # a real answer that is one JSON object, not the list that was asked for
    name = "secondary/segment_usercode_fire-extinguisher-mask_repo-unknown.json"
    result = TASK.parse((gemini_real / name).read_text(), segment_spec(), [CUPCAKES])
    [obj] = result.output["objects"]
    assert obj["label"] == "clock of fire extinguisher"
    assert obj["box_2d"] == [380, 368, 499, 520]
    assert result.masks is not None and result.masks[0] is not None
    assert result.masks[0].area_px() > 0
    assert result.warnings == ["model answered one JSON object, not a list; read it as one item"]


def test_an_item_without_a_label_keeps_its_box_and_mask(gemini_real: Path) -> None:
    text = (gemini_real / SEGMENT_02).read_text()
    items = json.loads(text.removeprefix("```json").removesuffix("```"))
    del items[0]["label"]
    result = TASK.parse(json.dumps(items), segment_spec(), [CUPCAKES])
    assert result.output["objects"][0]["label"] == detect.EMPTY_LABEL
    assert result.masks is not None and result.masks[0] is not None
    assert 'item 0: no label; labelled "object"' in result.warnings


def test_polygon_with_a_huge_integer_costs_only_its_mask() -> None:
    polygon = [[10**400, 1], [2, 3], [4, 5]]
    text = json.dumps([{"box_2d": [100, 100, 500, 500], "label": "x", "mask": polygon}])
    result = TASK.parse(text, segment_spec(), [CUPCAKES])
    assert [o["label"] for o in result.output["objects"]] == ["x"]
    assert result.masks == [None]


def test_real_seg_token_answer_keeps_boxes_without_masks(gemini_real: Path) -> None:
    text = (gemini_real / SEG_TOKENS).read_text()
    first_image = [
        json.loads(line.strip().rstrip(","))
        for line in text.splitlines()
        if '"box_2d"' in line and "the cow" not in line
    ]
    result = TASK.parse(json.dumps(first_image), segment_spec(), [CUPCAKES])
    assert [o["label"] for o in result.output["objects"]] == ["the microwave", "the tv", "the cup"]
    assert result.masks == [None, None, None]
    assert result.warnings == [
        "no mask could be decoded for any of the 3 objects; their boxes and labels are kept",
        f"objects 0-2: no mask ({TOKENS_REASON}); box and label kept",
    ]


# --- mixed and unsupported masks ----------------------------------------------------


@pytest.mark.parametrize(
    ("items", "decoded", "warnings"),
    [
        pytest.param(
            [item(constant_map(255)), item("<start_of_mask><seg_115><seg_7>")],
            [True, False],
            [f"object 1: no mask ({TOKENS_REASON}); box and label kept"],
            id="seg-tokens",
        ),
        pytest.param(
            [item("gimme_mask_for_this"), item(constant_map(255))],
            [False, True],
            [
                "object 0: no mask (unknown mask string (not a PNG data URI, base64 PNG or "
                "polygon): 'gimme_mask_for_this'); box and label kept"
            ],
            id="placeholder-string",
        ),
        pytest.param(
            [item(constant_map(255)), item()],
            [True, False],
            ['object 1: no mask (the item has no "mask" key); box and label kept'],
            id="missing-mask",
        ),
        pytest.param(
            [item(constant_map(255)), {**item(), "mask": None}],
            [True, False],
            ["object 1: no mask (mask is null); box and label kept"],
            id="null-mask",
        ),
        pytest.param(
            [item(constant_map(255).removeprefix("data:image/png;base64,"))],
            [True],
            [],
            id="bare-base64-png",
        ),
        pytest.param(
            [item([[150, 150], [450, 150], [450, 550]]), item(constant_map(255))],
            [True, True],
            [],
            id="polygon",
        ),
        pytest.param(
            [item(constant_map(255))] + [item("<seg_1>")] * 3 + [item(constant_map(255))],
            [True, False, False, False, True],
            [f"objects 1-3: no mask ({TOKENS_REASON}); box and label kept"],
            id="repeated-reason-aggregated",
        ),
        pytest.param(
            [item("<seg_1>"), item(constant_map(255)), item("<seg_2>"), item("<seg_3>")],
            [False, True, False, False],
            [f"objects 0, 2-3: no mask ({TOKENS_REASON}); box and label kept"],
            id="indexes-as-ranges",
        ),
    ],
)
def test_objects_without_a_usable_mask_keep_their_box(
    items: list[Any], decoded: list[bool], warnings: list[str]
) -> None:
    result = TASK.parse(json.dumps(items), segment_spec(), [WIDE])
    assert len(result.output["objects"]) == len(items)
    assert result.masks is not None
    assert [mask is not None for mask in result.masks] == decoded
    assert result.warnings == warnings


def test_no_decodable_mask_at_all_still_succeeds_with_a_warning() -> None:
    items = [item("gimme_mask_for_this"), item("gimme_mask_for_this", label="plate")]
    result = TASK.parse(json.dumps(items), segment_spec(), [WIDE])
    assert [o["label"] for o in result.output["objects"]] == ["cup", "plate"]
    assert result.masks == [None, None]
    assert result.warnings[0] == (
        "no mask could be decoded for any of the 2 objects; their boxes and labels are kept"
    )
    assert result.warnings[1].startswith("objects 0-1: no mask (unknown mask string")


def test_mask_warnings_name_objects_not_model_items() -> None:
    # the model's item 0 is dropped (empty box), so its item 1 is object 0
    items = [item(constant_map(255), box_2d=(5, 5, 5, 5)), item("gimme_mask_for_this")]
    result = TASK.parse(json.dumps(items), segment_spec(), [WIDE])
    assert result.masks == [None]
    assert result.warnings[0].startswith("dropped item 0: box_2d is empty")
    assert result.warnings[-1].startswith("object 0: no mask (unknown mask string")


def test_many_different_mask_problems_give_a_bounded_number_of_warnings() -> None:
    items = [item(f"placeholder {i}") for i in range(14)] + [item(constant_map(255))]
    result = TASK.parse(json.dumps(items), segment_spec(), [WIDE])
    assert len(result.output["objects"]) == 15
    assert len(result.warnings) == 11
    assert result.warnings[-1] == "... and 4 more objects without a mask"


@pytest.mark.parametrize(
    ("threshold_u8", "area_px"),
    [
        pytest.param(199, 160 * 100, id="200-above-199"),
        pytest.param(200, 0, id="200-not-above-200"),
    ],
)
def test_the_jobs_mask_threshold_is_used(threshold_u8: int, area_px: int) -> None:
    # box_2d (100, 250, 900, 500) on 400x200: x 100..200 px, y 20..180 px
    items = [item(constant_map(200), box_2d=(100, 250, 900, 500))]
    result = TASK.parse(json.dumps(items), segment_spec(mask_threshold_u8=threshold_u8), [WIDE])
    assert result.masks is not None
    (mask,) = result.masks
    assert mask.box_xyxy_px == (100, 20, 200, 180)
    assert mask.area_px() == area_px


def test_more_objects_than_max_items_keeps_the_first_with_their_masks() -> None:
    items = [item(constant_map(255), label=f"cup {i}") for i in range(5)]
    result = TASK.parse(json.dumps(items), segment_spec(max_items=3), [WIDE])
    assert [o["label"] for o in result.output["objects"]] == ["cup 0", "cup 1", "cup 2"]
    assert result.masks is not None and len(result.masks) == 3
    assert result.warnings == ["kept the first 3 of 5 objects (options.max_items)"]


def test_nothing_found_is_an_empty_answer() -> None:
    result = TASK.parse("```json\n[]\n```", segment_spec(), [WIDE])
    assert result.output == {"objects": []}
    assert result.masks == []
    assert result.warnings == []


@pytest.mark.parametrize(
    "text",
    [
        pytest.param("I cannot segment this image.", id="prose-only"),
        pytest.param(json.dumps([item(constant_map(255), box_2d=(5, 5, 5, 5))]), id="no-box"),
        pytest.param('[{"box_2d": [10, 20', id="cut-before-first-item"),
    ],
)
def test_unreadable_output_is_an_error_with_the_raw_text(text: str) -> None:
    with pytest.raises(ModelOutputInvalid) as caught:
        TASK.parse(text, segment_spec(), [WIDE])
    assert caught.value.raw_text == text


def test_parse_needs_exactly_one_image_size() -> None:
    with pytest.raises(ValueError):
        TASK.parse("[]", segment_spec(), [WIDE, WIDE])


# --- the request and the job check --------------------------------------------------


def test_request_follows_the_cookbook() -> None:
    request = TASK.build_request(segment_spec("the metal, wooden and glass small items."))
    assert request.prompt == (
        "Give the segmentation masks for the metal, wooden and glass small items. Output a "
        "JSON list of segmentation masks where each entry contains the 2D bounding box in the "
        'key "box_2d", the segmentation mask in key "mask", and the text label in the key '
        '"label". Use descriptive labels. Limit to 25 objects.'
    )
    # detect's instruction says "Never return masks": segmentation runs without one
    assert request.system_instruction is None
    assert request.response_json_schema is None
    assert request.spatial is True
    assert request.fit_within_px == 1024


@pytest.mark.parametrize("prompt", [None, "", "   "])
def test_request_without_prompt_segments_the_prominent_items(prompt: str | None) -> None:
    request = TASK.build_request(segment_spec(prompt, max_items=7))
    assert request.prompt.startswith("Give the segmentation masks for the prominent items. ")
    assert request.prompt.endswith(" Limit to 7 objects.")


@pytest.mark.parametrize(
    ("spec", "field"),
    [
        pytest.param(TaskSpec(task="segment", image_count=2), "images", id="two-images"),
        pytest.param(TaskSpec(task="segment", image_count=0), "images", id="no-image"),
        pytest.param(
            TaskSpec(task="segment", image_count=1, max_items=0),
            "options.max_items",
            id="max-items-0",
        ),
        pytest.param(
            TaskSpec(task="segment", image_count=1, mask_threshold_u8=255),
            "options.mask_threshold",
            id="threshold-255",
        ),
        pytest.param(
            TaskSpec(task="segment", image_count=1, mask_threshold_u8=-1),
            "options.mask_threshold",
            id="threshold-negative",
        ),
        pytest.param(
            TaskSpec(task="segment", image_count=1, labels=("cat",)), "labels", id="labels"
        ),
        pytest.param(
            TaskSpec(task="segment", image_count=1, response_schema={"type": "object"}),
            "response_schema",
            id="response-schema",
        ),
    ],
)
def test_check_rejects_what_segment_cannot_use(spec: TaskSpec, field: str) -> None:
    with pytest.raises(InvalidJob) as caught:
        TASK.check(spec)
    assert caught.value.details["field"] == field


@pytest.mark.parametrize("threshold_u8", [0, 127, 254])
def test_check_accepts_a_plain_segment_job(threshold_u8: int) -> None:
    TASK.check(segment_spec("the cupcakes", mask_threshold_u8=threshold_u8))


def test_segment_is_registered() -> None:
    assert registry.get_task("segment") is TASK
    assert (TASK.min_images, TASK.max_images) == (1, 1)
