"""tasks.model_json: JSON out of real and mangled model text."""

from __future__ import annotations

from pathlib import Path

import pytest

from tasks.errors import ModelOutputInvalid
from tasks.model_json import ItemList, extract_item_list, extract_json

DETECT_01 = "detect_01_cookbook_cupcakes_gemini-2.0-flash.txt"
SEGMENT_01 = "segment_01_cookbook_cupcakes-small-items_gemini-2.5-pro-exp-03-25.txt"

ITEMS = [{"box_2d": [1, 2, 3, 4], "label": "a"}, {"box_2d": [5, 6, 7, 8], "label": "b"}]
ITEMS_JSON = '[{"box_2d": [1, 2, 3, 4], "label": "a"}, {"box_2d": [5, 6, 7, 8], "label": "b"}]'


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        pytest.param('{"a": 1}', {"a": 1}, id="bare-object"),
        pytest.param("  [1, 2]\n", [1, 2], id="bare-list-with-whitespace"),
        pytest.param('"cat"', "cat", id="bare-string"),
        pytest.param("42", 42, id="bare-number"),
        pytest.param('```json\n{"a": 1}\n```', {"a": 1}, id="fenced"),
        pytest.param('```json\n{"a": 1}\n```\n', {"a": 1}, id="fenced-newline-after"),
        pytest.param('```json\n"cat"\n```', "cat", id="fenced-scalar"),
        pytest.param('```\n{"a": 1}\n```', {"a": 1}, id="fence-without-language"),
        pytest.param('```JSON {"a": 1}```', {"a": 1}, id="fence-on-one-line"),
        pytest.param('```{"a": 1}```', {"a": 1}, id="fence-no-tag-one-line"),
        pytest.param(
            'Here it is:\n```json\n{"a": [1, 2]}\n```\nHope this helps [really].',
            {"a": [1, 2]},
            id="fenced-with-prose-around",
        ),
        pytest.param('Sure! {"a": 1} is what I found.', {"a": 1}, id="unfenced-with-prose-around"),
        pytest.param(
            "I found [2] things: " + ITEMS_JSON + " (see note {x})",
            ITEMS,
            id="prose-with-brackets-longest-json-wins",
        ),
        pytest.param(
            '[{"label": "a ] tricky [ label {"}]',
            [{"label": "a ] tricky [ label {"}],
            id="brackets-inside-strings",
        ),
        pytest.param(
            'Answer: [{"label": "say \\"hi\\" ]"}] done',
            [{"label": 'say "hi" ]'}],
            id="escaped-quotes-inside-strings",
        ),
        pytest.param('["\\\\", "]"] tail', ["\\", "]"], id="escaped-backslash-before-quote"),
        pytest.param('[1, 2} and then {"a": [3]}', {"a": [3]}, id="mismatched-prose-then-json"),
        pytest.param('{[1] ["x"]]', ["x"], id="inner-values-of-a-mismatched-span"),
        pytest.param(
            'Note (1 of 2: see below\n```json\n["x"]\n```', ["x"], id="unclosed-paren-in-prose"
        ),
    ],
)
def test_extract_json_finds_the_value(text: str, expected: object) -> None:
    assert extract_json(text) == expected


@pytest.mark.parametrize(
    "text",
    [
        pytest.param("", id="empty"),
        pytest.param("   \n", id="whitespace"),
        pytest.param("I cannot help with that request.", id="prose-only"),
        pytest.param("[not json]", id="bracketed-prose"),
        pytest.param("[{'label': 'cat'}]", id="python-repr-single-quotes"),
        pytest.param("```json\n```", id="empty-fence"),
        pytest.param("[NaN, 1]", id="nan-is-not-json"),
        pytest.param('{"a": Infinity}', id="infinity-is-not-json"),
        pytest.param('[{"a": 1}, {"b": 2', id="truncated"),
        pytest.param("[" * 100_000, id="deeply-nested-unterminated"),
        pytest.param("[" * 100_000 + "]" * 100_000, id="deeply-nested-closed"),
        pytest.param("[" * 100_000 + "}", id="many-openings-one-wrong-closer"),
        pytest.param("[1, 2}", id="mismatched-closer"),
    ],
)
def test_extract_json_rejects_unreadable_text_keeping_it(text: str) -> None:
    with pytest.raises(ModelOutputInvalid) as caught:
        extract_json(text)
    assert caught.value.raw_text == text
    assert caught.value.to_record()["code"] == "model_output_invalid"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        pytest.param(ITEMS_JSON, ITEMS, id="bare-list"),
        pytest.param("```json\n" + ITEMS_JSON + "\n```", ITEMS, id="fenced-list"),
        pytest.param('{"boxes": ' + ITEMS_JSON + "}", ITEMS, id="wrapped-boxes"),
        pytest.param('{"objects": ' + ITEMS_JSON + "}", ITEMS, id="wrapped-objects"),
        pytest.param('{"anything": ["a", "b"]}', ["a", "b"], id="wrapped-sole-member"),
        pytest.param(
            '{"count": 2, "items": ' + ITEMS_JSON + "}", ITEMS, id="wrapped-with-other-members"
        ),
        pytest.param("[]", [], id="empty-list"),
        pytest.param('{"boxes": []}', [], id="wrapped-empty-list"),
    ],
)
def test_extract_item_list_finds_the_list(text: str, expected: list[object]) -> None:
    found = extract_item_list(text)
    assert found == ItemList(items=expected, truncated=False)
    assert found.warnings == []


@pytest.mark.parametrize(
    ("text", "item"),
    [
        pytest.param(
            '{"box_2d": [1, 2, 3, 4], "label": "a"}',
            {"box_2d": [1, 2, 3, 4], "label": "a"},
            id="lone-item-is-not-a-wrapper",
        ),
        pytest.param(
            '{"a": [{"x": 1}], "b": [{"y": 2}]}',
            {"a": [{"x": 1}], "b": [{"y": 2}]},
            id="two-lists-is-a-lone-object",
        ),
        pytest.param('{"a": 1}', {"a": 1}, id="object-without-list"),
    ],
)
def test_extract_item_list_reads_a_lone_object_as_one_item(text: str, item: object) -> None:
    found = extract_item_list(text)
    assert found.items == [item]
    assert found.lone_object and not found.truncated
    assert found.warnings == ["model answered one JSON object, not a list; read it as one item"]


@pytest.mark.parametrize(
    "text",
    [
        pytest.param('"cat"', id="string"),
        pytest.param("3", id="number"),
        pytest.param("no json here", id="no-json"),
        pytest.param('[{"box_2d": [1, 2', id="truncated-with-no-complete-item"),
        pytest.param('{"boxes": {"a": [1', id="truncated-object-without-list"),
        pytest.param('{"count": 3, "note": "long', id="truncated-object-no-list-member"),
    ],
)
def test_extract_item_list_rejects_what_is_not_a_list(text: str) -> None:
    with pytest.raises(ModelOutputInvalid) as caught:
        extract_item_list(text)
    assert caught.value.raw_text == text


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        pytest.param('[{"a": 1}, {"b": 2}, {"c": [3', [{"a": 1}, {"b": 2}], id="cut-in-item"),
        pytest.param('[{"a": 1}, {"b": "lo', [{"a": 1}], id="cut-in-string"),
        pytest.param('[{"a": 1}, ', [{"a": 1}], id="cut-after-comma"),
        pytest.param('[{"a": 1}', [{"a": 1}], id="cut-after-item"),
        pytest.param('["x", "y", "z', ["x", "y"], id="cut-in-string-item"),
        pytest.param("[1, 2, 3", [1, 2], id="number-at-cut-may-lack-digits"),
        pytest.param("[1, 2, 3 ", [1, 2], id="number-then-whitespace-at-cut"),
        pytest.param("[true, false", [True, False], id="literal-at-cut-is-complete"),
        pytest.param('```json\n[{"a": 1}, {"b": 2}, {"c"', [{"a": 1}, {"b": 2}], id="cut-in-fence"),
        pytest.param(
            'Here you go: {"boxes": [{"a": 1}, {"b": 2}, {"c"',
            [{"a": 1}, {"b": 2}],
            id="cut-in-wrapper",
        ),
        pytest.param(
            '{"count": 2, "meta": {"m": [1]}, "boxes": [{"a": 1}, {"b"',
            [{"a": 1}],
            id="cut-in-wrapper-after-other-members",
        ),
        pytest.param('[{"a": 1} {"b": 2}', [{"a": 1}], id="missing-comma-stops-salvage"),
        pytest.param('Found [1]. [{"a": 1}, {"b', [{"a": 1}], id="cut-list-beats-earlier-json"),
    ],
)
def test_extract_item_list_salvages_a_cut_list(text: str, expected: list[object]) -> None:
    found = extract_item_list(text)
    assert found.items == expected
    assert found.truncated is True
    assert len(found.warnings) == 1
    assert "cut off" in found.warnings[0]
    assert f"kept the {len(expected)} complete items" in found.warnings[0]


def test_complete_json_followed_by_a_short_cut_bracket_is_not_truncated() -> None:
    found = extract_item_list(ITEMS_JSON + "\nNote [1: the second")
    assert found == ItemList(items=ITEMS, truncated=False)


def test_cut_real_detection_output_salvages_the_items_before_the_cut(gemini_real: Path) -> None:
    text = (gemini_real / DETECT_01).read_text()
    cut = text[: text.index('"label": "chocolate"')]  # item 5 loses its label
    found = extract_item_list(cut)
    assert found.truncated is True
    assert [item["label"] for item in found.items] == [
        "red sprinkles",
        "pink swirl",
        "pink swirl",
        "pink swirl with blue sprinkles",
    ]
    with pytest.raises(ModelOutputInvalid, match="truncated") as caught:
        extract_json(cut)
    assert caught.value.raw_text == cut


def test_runaway_mask_cut_mid_base64_salvages_the_complete_items(gemini_real: Path) -> None:
    text = (gemini_real / SEGMENT_01).read_text()
    fifth_mask = [i for i in range(len(text)) if text.startswith('"mask"', i)][4]
    cut = text[: fifth_mask + 500]  # inside the fifth item's base64 PNG
    found = extract_item_list(cut)
    assert found.truncated is True
    assert len(found.items) == 4
    assert all(item["mask"].startswith("data:image/png;base64,") for item in found.items)


def test_complete_real_outputs_are_not_truncated(gemini_real: Path) -> None:
    for path in sorted(gemini_real.glob("*.txt")):
        if path.name.startswith(("detect_", "segment_")):
            found = extract_item_list(path.read_text())
            assert found.truncated is False, path.name
            assert found.items, path.name
