"""tasks.detect over the real Gemini outputs and their mangled variants."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tasks.base import ImageSize, TaskSpec
from tasks.detect import (
    EMPTY_LABEL,
    LABEL_MAX_CHARS,
    SYSTEM_INSTRUCTION,
    TASK,
    parse_detections,
)
from tasks.errors import InvalidJob, ModelOutputInvalid

SOCKS = ImageSize(width_px=640, height_px=482)  # the size the cookbook sent socks.jpg at
SQUARE = ImageSize(width_px=1000, height_px=1000)  # pixel box == box_2d: easy to read

Expected = list[tuple[str, tuple[int, int, int, int]]]

# (label, box_2d) of every item, copied by hand from the fixture files (not computed).
REAL_OUTPUTS: dict[str, Expected] = {
    "detect_01_cookbook_cupcakes_gemini-2.0-flash.txt": [
        ("red sprinkles", (384, 65, 562, 203)),
        ("pink swirl", (376, 253, 539, 365)),
        ("pink swirl", (351, 400, 495, 496)),
        ("pink swirl with blue sprinkles", (359, 531, 524, 648)),
        ("chocolate", (375, 746, 535, 860)),
        ("sprinkles", (541, 40, 727, 200)),
        ("pink", (437, 434, 596, 562)),
        ("sprinkles", (453, 625, 637, 770)),
        ("blue and yellow sprinkles", (451, 796, 687, 959)),
        ("googly eyes", (541, 292, 698, 445)),
        ("googly eyes", (546, 515, 713, 664)),
        ("googly eyes", (644, 350, 818, 523)),
        ("googly eyes", (742, 139, 923, 309)),
    ],
    "detect_02_cookbook_socks_gemini-2.0-flash.txt": [
        ("sock with face", (53, 248, 388, 527)),
        ("sock with face", (236, 662, 653, 862)),
    ],
    "detect_03_cookbook_spill_gemini-2.0-flash_prose.txt": [
        ("pink cloth", (447, 0, 1000, 418)),
        ("sugar bowl", (197, 300, 510, 514)),
        ("spill", (433, 607, 664, 871)),
        ("sugar container", (0, 465, 325, 807)),
    ],
    "detect_04_cookbook_cupcakes_gemini-2.5-pro-exp-03-25.txt": [
        ("red sprinkles", (393, 65, 560, 206)),
        ("pink frosting with sprinkles", (379, 248, 540, 370)),
        ("pink frosting with sprinkles", (365, 396, 504, 504)),
        ("pink frosting with googly eyes", (444, 433, 596, 567)),
        ("pink frosting with blue candies", (358, 527, 523, 653)),
        ("chocolate frosting", (379, 738, 535, 869)),
        ("white frosting with colorful sprinkles", (552, 40, 727, 201)),
        ("white frosting with googly eyes and sprinkles", (546, 293, 702, 447)),
        ("white frosting with googly eyes and sprinkles", (558, 513, 712, 665)),
        ("white frosting with colorful sprinkles", (477, 628, 638, 773)),
        ("white frosting with colorful candies", (510, 799, 692, 960)),
        ("white frosting with googly eyes", (744, 133, 923, 309)),
        ("white frosting with googly eyes", (658, 351, 821, 515)),
    ],
    "detect_05_cookbook_socks_gemini-2.5-pro-exp-03-25.txt": [
        ("light blue sock with face on left", (57, 247, 385, 527)),
        ("light blue sock with face on right", (236, 664, 653, 860)),
    ],
    "detect_06_cookbook_spill_gemini-2.5-pro-exp-03-25.txt": [
        ("Wipe up this liquid spill.", (434, 598, 665, 871)),
        ("Use this cloth to wipe the spill.", (467, 0, 1000, 425)),
    ],
    "detect_07_cookbook_cupcakes_gemini-2.5-flash.txt": [
        ("red sprinkles", (390, 64, 574, 203)),
        ("pink and blue sprinkles", (382, 250, 537, 369)),
        ("pink frosting", (365, 397, 501, 509)),
        ("pink frosting with blue balls", (355, 529, 521, 650)),
        ("chocolate frosting", (384, 737, 535, 866)),
        ("pink frosting with googly eyes", (443, 432, 595, 564)),
        ("white frosting with colorful sprinkles", (477, 627, 638, 770)),
        ("white frosting with colorful sprinkles", (556, 40, 726, 200)),
        ("white frosting with colorful candies", (510, 799, 690, 959)),
        ("white frosting with googly eyes", (545, 295, 702, 444)),
        ("white frosting with googly eyes", (559, 514, 712, 663)),
        ("white frosting with colorful sprinkles", (429, 597, 638, 770)),
        ("white frosting with googly eyes", (713, 271, 874, 497)),
        ("white frosting with googly eyes", (655, 350, 816, 516)),
        ("white frosting with googly eyes", (743, 133, 921, 307)),
    ],
    "detect_08_cookbook_socks_gemini-2.5-flash.txt": [
        ("light blue sock with cat face on left", (46, 246, 385, 526)),
        ("light blue and grey sock with cat face on right", (233, 661, 650, 862)),
    ],
    "detect_09_cookbook_spill_gemini-2.5-flash.txt": [
        (
            "Use this cloth to absorb the spilled liquid by gently dabbing or wiping the area.",
            (447, 0, 992, 420),
        ),
        (
            "This spill needs to be cleaned immediately to prevent staining the countertop.",
            (431, 603, 663, 871),
        ),
        (
            "Move these knives away from the spill area to avoid contamination or accidental cuts during cleaning.",
            (303, 147, 461, 314),
        ),
        (
            "Ensure this sugar container is sealed or moved to prevent it from getting wet or contaminated during cleaning.",
            (0, 465, 320, 808),
        ),
        (
            "Carefully move this sugar pot away from the spill to protect its contents and prevent it from being knocked over.",
            (196, 301, 508, 514),
        ),
        (
            "This white marble-patterned countertop needs to be wiped clean of the spill. After wiping, you may want to use a damp cloth to remove any residue and then dry it thoroughly.",
            (182, 0, 998, 1000),
        ),
    ],
    "detect_10_cookbook_cupcakes_interactions-api_gemini-3-flash-preview.txt": [
        ("red sprinkle topping", (393, 67, 574, 206)),
        ("pink swirl topping with sprinkles", (379, 248, 539, 370)),
        ("light pink swirl topping", (365, 396, 502, 503)),
        ("bright pink topping with eye dots", (444, 432, 597, 566)),
        ("pink swirl topping with blue dots", (353, 529, 522, 652)),
        ("chocolate swirl topping", (377, 737, 534, 866)),
        ("white frosting with colorful sprinkles", (554, 41, 727, 201)),
        ("monster topping with sprinkles and eyes", (543, 296, 703, 444)),
        ("monster topping with pink sprinkles and eyes", (557, 513, 712, 665)),
        ("white frosting with pink and green sprinkles", (473, 629, 638, 772)),
        ("white frosting with colorful candy dots", (508, 798, 691, 959)),
        ("monster topping with eyes (center)", (655, 353, 819, 516)),
        ("monster topping with eyes (bottom left)", (742, 134, 922, 308)),
    ],
    "detect_11_cookbook_cupcakes_segment-prompt-returned-boxes-only_gemini-3-flash-preview.txt": [
        ("chocolate cupcake with red sprinkles", (395, 66, 574, 206)),
        ("pink frosted cupcake with rainbow sprinkles", (386, 248, 540, 370)),
        ("vanilla cupcake with rainbow sprinkles and eyes", (554, 41, 727, 201)),
        ("pink frosted cupcake with small white pearls", (366, 397, 503, 502)),
        ("bright pink frosted cupcake with eyes", (444, 434, 597, 566)),
        ("chocolate cupcake with white frosting and eyes (top)", (543, 296, 704, 444)),
        ("pink frosted cupcake with blue pearls", (356, 529, 521, 652)),
        ("vanilla cupcake with pink sprinkles and eyes", (559, 513, 711, 664)),
        ("chocolate cupcake with white frosting and eyes (bottom)", (655, 352, 819, 515)),
        ("vanilla cupcake with white frosting and eyes", (741, 133, 921, 308)),
        ("white frosted cupcake with rainbow sprinkles", (476, 629, 638, 771)),
        ("chocolate frosted cupcake", (380, 738, 534, 865)),
        ("vanilla cupcake with colorful candy dots", (510, 798, 689, 960)),
    ],
    "detect_12_documentai_brochure-amenities_gemini-2.5-flash-lite.txt": [
        ("Squash Court", (351, 258, 548, 470)),
        ("Yoga Room", (351, 30, 548, 242)),
        ("Gym", (516, 531, 959, 968)),
        ("Swimming Pool", (37, 531, 482, 968)),
        ("Club Accolade", (551, 0, 1000, 500)),
    ],
    "segment_01_cookbook_cupcakes-small-items_gemini-2.5-pro-exp-03-25.txt": [
        ("metal shaker", (265, 702, 433, 812)),
        ("wooden rolling pin", (208, 550, 279, 894)),
        ("glass jar with sprinkles", (185, 98, 360, 229)),
        ("wooden utensil", (54, 230, 210, 318)),
        ("wooden spoon with frosting", (706, 656, 896, 1000)),
        ("wooden spoon", (75, 443, 167, 507)),
        ("glass jar with sprinkles", (277, 803, 469, 938)),
        ("metal lid", (185, 100, 221, 215)),
        ("metal lid", (277, 818, 331, 936)),
        ("wooden utensil", (2, 371, 162, 453)),
        ("metal pot", (150, 394, 362, 586)),
        ("small glass jar with red lid", (273, 296, 379, 385)),
        ("metal lid", (265, 706, 308, 812)),
        ("metal cup", (194, 249, 342, 381)),
        ("wooden spoon", (771, 844, 810, 1000)),
        ("metal bowl", (271, 633, 375, 707)),
        ("wooden utensil", (48, 322, 208, 375)),
        ("wooden utensil", (73, 339, 210, 400)),
        ("wooden utensil", (31, 473, 165, 529)),
        ("wooden utensil", (29, 515, 167, 585)),
    ],
    "segment_02_cookbook_cupcakes-small-items_gemini-2.5-flash.txt": [
        ("glass jar with sprinkles", (168, 97, 360, 228)),
        ("glass jar with sprinkles", (276, 804, 467, 936)),
        ("glass jar with milk", (260, 699, 431, 810)),
        ("glass body of red jar", (272, 296, 376, 396)),
        ("metal lid of red jar", (272, 296, 376, 396)),
        ("small metal bowl", (267, 617, 368, 706)),
        ("large metal pot", (147, 391, 362, 584)),
        ("small metal container", (190, 252, 340, 381)),
        ("wooden rolling pin", (203, 552, 278, 896)),
        ("wooden utensils in small container", (57, 233, 220, 332)),
        ("wooden utensils in large pot", (0, 369, 167, 586)),
        ("metal lid of sprinkle jar", (508, 798, 691, 960)),
        ("metal lid of milk jar", (260, 699, 431, 810)),
        ("wooden spoon with frosting", (706, 654, 900, 1000)),
        ("wooden spoon", (680, 756, 812, 1000)),
    ],
}


def detect_spec(prompt: str | None = None, max_items: int = 25) -> TaskSpec:
    return TaskSpec(task="detect", image_count=1, prompt=prompt, max_items=max_items)


def test_every_real_detection_sample_has_an_expectation(gemini_real: Path) -> None:
    on_disk = {
        p.name for p in gemini_real.glob("*.txt") if p.name.startswith(("detect_", "segment_"))
    }
    assert on_disk == set(REAL_OUTPUTS)
    assert len([name for name in on_disk if name.startswith("detect_")]) == 12


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        pytest.param(name, expected, id=name.split("_cookbook")[0].split("_documentai")[0])
        for name, expected in REAL_OUTPUTS.items()
    ],
)
def test_real_output_parses_to_its_boxes_and_labels(
    gemini_real: Path, name: str, expected: Expected
) -> None:
    text = (gemini_real / name).read_text()
    result = TASK.parse(text, detect_spec(), [SQUARE])
    objects = result.output["objects"]
    assert [(o["label"], tuple(o["box_2d"])) for o in objects] == expected
    # on a 1000x1000 image a pixel box is the box_2d, x first
    assert [o["box"] for o in objects] == [[x0, y0, x1, y1] for _, (y0, x0, y1, x1) in expected]
    assert result.warnings == []


def test_segment_outputs_give_their_20_and_15_boxes(gemini_real: Path) -> None:
    counts = [
        len(TASK.parse((gemini_real / name).read_text(), detect_spec(), [SQUARE]).output["objects"])
        for name in sorted(REAL_OUTPUTS)
        if name.startswith("segment_")
    ]
    assert counts == [20, 15]


def test_socks_boxes_in_pixels_of_the_640x482_image(gemini_real: Path) -> None:
    text = (gemini_real / "detect_02_cookbook_socks_gemini-2.0-flash.txt").read_text()
    objects = TASK.parse(text, detect_spec(), [SOCKS]).output["objects"]
    # 248*0.64=158.72 53*0.482=25.546 527*0.64=337.28 388*0.482=187.016
    # 662*0.64=423.68 236*0.482=113.752 862*0.64=551.68 653*0.482=314.746
    assert objects == [
        {"label": "sock with face", "box_2d": [53, 248, 388, 527], "box": [159, 26, 337, 187]},
        {"label": "sock with face", "box_2d": [236, 662, 653, 862], "box": [424, 114, 552, 315]},
    ]


def test_cut_off_real_output_keeps_the_complete_items_and_warns(gemini_real: Path) -> None:
    text = (gemini_real / "detect_01_cookbook_cupcakes_gemini-2.0-flash.txt").read_text()
    cut = text[: text.index("[375, 746")]  # the 5th item is cut inside its box
    result = TASK.parse(cut, detect_spec(), [SQUARE])
    assert [o["label"] for o in result.output["objects"]] == [
        "red sprinkles",
        "pink swirl",
        "pink swirl",
        "pink swirl with blue sprinkles",
    ]
    assert len(result.warnings) == 1
    assert "cut off" in result.warnings[0]


def test_segment_output_cut_inside_a_mask_keeps_the_boxes_before(gemini_real: Path) -> None:
    text = (
        gemini_real / "segment_02_cookbook_cupcakes-small-items_gemini-2.5-flash.txt"
    ).read_text()
    cut = text[: len(text) // 2]
    result = TASK.parse(cut, detect_spec(), [SQUARE])
    labels = [
        label
        for label, _ in REAL_OUTPUTS[
            "segment_02_cookbook_cupcakes-small-items_gemini-2.5-flash.txt"
        ]
    ]
    kept = [o["label"] for o in result.output["objects"]]
    assert 0 < len(kept) < 15
    assert kept == labels[: len(kept)]
    assert any("cut off" in w for w in result.warnings)


def item(box_2d: object, label: object = "cup") -> dict[str, object]:
    return {"box_2d": box_2d, "label": label}


def as_text(items: object) -> str:
    return json.dumps(items)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        pytest.param(
            'Here are the boxes:\n```json\n[{"box_2d": [10, 20, 30, 40], "label": "cup"}]\n```\n'
            "The cup is on the left.",
            [("cup", [10, 20, 30, 40])],
            id="fenced-with-prose-around",
        ),
        pytest.param(
            '```json\n[{"box_2d": [10, 20, 30, 40], "label": "cup"}]\n```',
            [("cup", [10, 20, 30, 40])],
            id="no-newline-after-fence",
        ),
        pytest.param(
            '{"boxes": [{"box_2d": [10, 20, 30, 40], "label": "cup"}]}',
            [("cup", [10, 20, 30, 40])],
            id="object-wrapped-list",
        ),
        pytest.param(
            '{"objects": [{"box_2d": [10, 20, 30, 40], "label": "cup"}]}',
            [("cup", [10, 20, 30, 40])],
            id="objects-wrapped-list",
        ),
        pytest.param(
            as_text([item([30, 40, 10, 20])]), [("cup", [10, 20, 30, 40])], id="corners-swapped"
        ),
        pytest.param(
            as_text([item([-10, 900, 500, 1200])]),
            [("cup", [0, 900, 500, 1000])],
            id="out-of-range-clipped",
        ),
        pytest.param(
            as_text([item([10.4, 20.6, 30.5, 40])]),
            [("cup", [10, 21, 31, 40])],
            id="float-coordinates-rounded",
        ),
        pytest.param(
            as_text([{**item([10, 20, 30, 40]), "mask": "data:image/png;base64,AAAA"}]),
            [("cup", [10, 20, 30, 40])],
            id="mask-ignored",
        ),
        pytest.param(
            as_text([item([10, 20, 30, 40], "  cup \n")]),
            [("cup", [10, 20, 30, 40])],
            id="label-stripped",
        ),
        pytest.param(
            as_text([item([10, 20, 30, 40], 7)]), [("7", [10, 20, 30, 40])], id="number-label"
        ),
        pytest.param(
            as_text([item([10, 20, 30, 40]), item([10, 20, 30, 40], "lid")]),
            [("cup", [10, 20, 30, 40]), ("lid", [10, 20, 30, 40])],
            id="two-items-share-a-box",
        ),
        pytest.param("[]", [], id="nothing-found"),
    ],
)
def test_variants_parse_without_warnings(text: str, expected: list[tuple[str, list[int]]]) -> None:
    result = TASK.parse(text, detect_spec(), [SQUARE])
    assert [(o["label"], o["box_2d"]) for o in result.output["objects"]] == expected
    assert result.warnings == []


@pytest.mark.parametrize(
    ("items", "kept", "warning"),
    [
        pytest.param(
            [item([10, 20, 30, 40]), item([100, 50, 100, 90], "flat")],
            ["cup"],
            "dropped item 1: box_2d is empty",
            id="empty-box-dropped",
        ),
        pytest.param(
            [item([1200, 0, 1500, 100], "off"), item([10, 20, 30, 40])],
            ["cup"],
            "dropped item 0: box_2d is empty after clipping",
            id="box-empty-after-clipping-dropped",
        ),
        pytest.param(
            [item([10, 20, 30]), item([10, 20, 30, 40])],
            ["cup"],
            "dropped item 0: box_2d has 3 values",
            id="three-coordinates-dropped",
        ),
        pytest.param(
            [item([10, 20, True, 40]), item([10, 20, 30, 40])],
            ["cup"],
            "dropped item 0: box_2d holds a non-number",
            id="bool-coordinate-dropped",
        ),
        pytest.param(
            [{"label": "no box"}, item([10, 20, 30, 40])],
            ["cup"],
            "dropped item 0: no box_2d",
            id="missing-box-dropped",
        ),
        pytest.param(
            [{"box_2d": [100, 200, 300, 400]}],
            [EMPTY_LABEL],
            'item 0: no label; labelled "object"',
            id="missing-label-becomes-object",
        ),
        pytest.param(
            [item([10**400, 20, 30, 40]), item([10, 20, 30, 40])],
            ["cup"],
            "dropped item 0: box_2d holds a non-finite or absurd number",
            id="huge-integer-coordinate-dropped",
        ),
        pytest.param(
            [item([-(10**12), 20, 30, 40]), item([10, 20, 30, 40])],
            ["cup"],
            "dropped item 0: box_2d holds a non-finite or absurd number",
            id="absurd-negative-coordinate-dropped",
        ),
        pytest.param(
            ["cup", item([10, 20, 30, 40])],
            ["cup"],
            "dropped item 0: not an object",
            id="non-object-item-dropped",
        ),
        pytest.param(
            [item([10, 20, 30, 40], "")],
            [EMPTY_LABEL],
            'item 0: label is empty; labelled "object"',
            id="empty-label-becomes-object",
        ),
        pytest.param(
            [item([10, 20, 30, 40], None)],
            [EMPTY_LABEL],
            'item 0: label is null; labelled "object"',
            id="null-label-becomes-object",
        ),
        pytest.param(
            [item([10, 20, 30, 40], "x" * 250)],
            ["x" * LABEL_MAX_CHARS],
            "item 0: label of 250 characters cut to 200",
            id="long-label-capped",
        ),
    ],
)
def test_bad_items_are_dropped_or_mended_with_a_warning(
    items: list[object], kept: list[str], warning: str
) -> None:
    result = TASK.parse(as_text(items), detect_spec(), [SQUARE])
    assert [o["label"] for o in result.output["objects"]] == kept
    assert len(result.warnings) == 1
    assert result.warnings[0].startswith(warning)


def test_a_lone_object_is_read_as_a_one_item_list() -> None:
    result = TASK.parse('{"box_2d": [100, 200, 300, 400], "label": "cup"}', detect_spec(), [SQUARE])
    assert result.output["objects"] == [
        {"label": "cup", "box_2d": [100, 200, 300, 400], "box": [200, 100, 400, 300]}
    ]
    assert result.warnings == ["model answered one JSON object, not a list; read it as one item"]


def test_more_objects_than_max_items_keeps_the_first() -> None:
    items = [item([10, 20, 30, 40], f"cup {i}") for i in range(5)]
    result = TASK.parse(as_text(items), detect_spec(max_items=3), [SQUARE])
    assert [o["label"] for o in result.output["objects"]] == ["cup 0", "cup 1", "cup 2"]
    assert result.warnings == ["kept the first 3 of 5 objects (options.max_items)"]


def test_many_bad_items_give_a_bounded_number_of_warnings() -> None:
    items = [item([5, 5, 5, 5]) for _ in range(50)] + [item([10, 20, 30, 40])]
    result = TASK.parse(as_text(items), detect_spec(), [SQUARE])
    assert len(result.output["objects"]) == 1
    assert len(result.warnings) == 11
    assert result.warnings[-1] == "... and 40 more item problems like these"


@pytest.mark.parametrize(
    ("text", "message"),
    [
        pytest.param("I could not find any cupcakes in this image.", "no JSON", id="prose-only"),
        pytest.param("", "no text", id="empty-text"),
        pytest.param('{"label": "cup"}', "none of the model's 1 items", id="lone-object-no-box"),
        pytest.param(
            '{"a": 1, "b": [1, 2]}', "none of the model's 1 items", id="lone-other-object"
        ),
        pytest.param('"cup"', "not a list", id="string-not-list"),
        pytest.param("[[10, 20, 30, 40]]", "without objects", id="list-of-lists"),
        pytest.param('["cup", "plate"]', "without objects", id="list-of-strings"),
        pytest.param(
            as_text([item([5, 5, 5, 5])]), "none of the model's 1 items", id="only-empty-box"
        ),
        pytest.param(
            as_text([{"bbox": [1, 2, 3, 4], "name": "cup"}] * 2),
            "none of the model's 2 items",
            id="wrong-keys",
        ),
        pytest.param('[{"box_2d": [10, 20', "no complete item", id="cut-before-first-item"),
    ],
)
def test_unreadable_output_is_an_error_with_the_raw_text(text: str, message: str) -> None:
    with pytest.raises(ModelOutputInvalid, match=message) as caught:
        TASK.parse(text, detect_spec(), [SQUARE])
    assert caught.value.raw_text == text


def test_parse_detections_keeps_the_model_item_for_segmentation() -> None:
    raw = {"box_2d": [10, 20, 30, 40], "label": "cup", "mask": "data:image/png;base64,AAAA"}
    found = parse_detections(json.dumps([raw]), SOCKS, max_items=25)
    assert found.warnings == []
    (detection,) = found.objects
    assert detection.item == raw
    assert detection.box_2d == (10, 20, 30, 40)
    # 20*0.64=12.8 10*0.482=4.82 40*0.64=25.6 30*0.482=14.46
    assert detection.box_xyxy_px == (13, 5, 26, 14)


def test_parse_needs_exactly_one_image_size() -> None:
    with pytest.raises(ValueError):
        TASK.parse("[]", detect_spec(), [])


def test_request_follows_the_cookbook() -> None:
    request = TASK.build_request(detect_spec("the cupcakes, labelled by topping.", max_items=10))
    assert request.prompt.startswith(
        "Detect the 2d bounding boxes of the cupcakes, labelled by topping ("
    )
    assert "Limit to 10 objects." in request.prompt
    assert request.system_instruction == SYSTEM_INSTRUCTION.format(max_items=10)
    assert "Never return masks or code fencing. Limit to 10 objects." in request.system_instruction
    assert request.spatial is True
    schema = request.response_json_schema
    assert schema is not None
    assert schema["type"] == "array"
    assert schema["maxItems"] == 10
    assert schema["items"]["required"] == ["box_2d", "label"]
    assert schema["items"]["properties"]["box_2d"] == {
        "type": "array",
        "items": {"type": "integer"},
        "minItems": 4,
        "maxItems": 4,
    }
    assert schema["items"]["properties"]["label"] == {"type": "string"}


@pytest.mark.parametrize("prompt", [None, "", "   "])
def test_request_without_prompt_finds_the_prominent_items(prompt: str | None) -> None:
    request = TASK.build_request(detect_spec(prompt))
    assert request.prompt.startswith("Detect the 2d bounding boxes of the prominent items (")
    assert "Limit to 25 objects." in request.prompt


@pytest.mark.parametrize(
    ("spec", "field"),
    [
        pytest.param(TaskSpec(task="detect", image_count=2), "images", id="two-images"),
        pytest.param(TaskSpec(task="detect", image_count=0), "images", id="no-image"),
        pytest.param(
            TaskSpec(task="detect", image_count=1, max_items=0),
            "options.max_items",
            id="max-items-0",
        ),
        pytest.param(
            TaskSpec(task="detect", image_count=1, labels=("cat",)), "labels", id="labels"
        ),
        pytest.param(
            TaskSpec(task="detect", image_count=1, response_schema={"type": "object"}),
            "response_schema",
            id="response-schema",
        ),
    ],
)
def test_check_rejects_what_detect_cannot_use(spec: TaskSpec, field: str) -> None:
    with pytest.raises(InvalidJob, match=field.split(".")[0]) as caught:
        TASK.check(spec)
    assert caught.value.details["field"] == field


def test_check_accepts_a_plain_detect_job() -> None:
    TASK.check(detect_spec("the socks"))
