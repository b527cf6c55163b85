"""tasks.classify: the answer is restricted to the candidate labels."""

from __future__ import annotations

import pytest

from tasks.base import TaskSpec
from tasks.classify import TASK
from tasks.errors import InvalidJob, ModelOutputInvalid

LABELS = ("cat", "Golden Retriever", "bird")


def classify_spec(labels: tuple[str, ...] = LABELS, prompt: str | None = None) -> TaskSpec:
    return TaskSpec(task="classify", image_count=1, labels=labels, prompt=prompt)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        pytest.param('{"labels": ["cat"]}', ["cat"], id="schema-shape"),
        pytest.param('["bird", "cat"]', ["bird", "cat"], id="bare-list-order-kept"),
        pytest.param('"cat"', ["cat"], id="single-json-string"),
        pytest.param('{"label": "bird"}', ["bird"], id="single-member-object"),
        pytest.param("cat", ["cat"], id="plain-text-candidate"),
        pytest.param("  Golden retriever\n", ["Golden Retriever"], id="plain-text-any-case"),
        pytest.param(
            '{"labels": ["golden retriever"]}', ["Golden Retriever"], id="case-mapped-to-candidate"
        ),
        pytest.param('{"labels": ["  CAT "]}', ["cat"], id="whitespace-trimmed"),
        pytest.param('["cat", "Cat", "cat ", "bird"]', ["cat", "bird"], id="duplicates-dropped"),
        pytest.param('```json\n{"labels": ["cat"]}\n```', ["cat"], id="fenced"),
        pytest.param('{"labels": []}', [], id="explicit-empty-list"),
        pytest.param("[]", [], id="explicit-bare-empty-list"),
    ],
)
def test_answers_within_the_candidates(text: str, expected: list[str]) -> None:
    result = TASK.parse(text, classify_spec(), [])
    assert result.output == {"labels": expected}
    assert result.warnings == []


@pytest.mark.parametrize(
    ("text", "expected", "warning"),
    [
        pytest.param(
            '{"labels": ["cat", "dog"]}',
            ["cat"],
            "dropped answers that are not candidate labels: 'dog'",
            id="stray-label",
        ),
        pytest.param(
            '["dog", "cat", "dog", "fish"]',
            ["cat"],
            "dropped answers that are not candidate labels: 'dog', 'fish'",
            id="strays-named-once",
        ),
        pytest.param(
            '[1, null, "bird"]',
            ["bird"],
            "dropped answers that are not candidate labels: '1', 'null'",
            id="non-string-answers",
        ),
        pytest.param(
            '["cat", "' + "x" * 500 + '"]',
            ["cat"],
            "dropped answers that are not candidate labels: '" + "x" * 59 + "…'",
            id="long-stray-truncated",
        ),
        pytest.param(
            "[" + ", ".join(f'"s{i}"' for i in range(12)) + ', "cat"]',
            ["cat"],
            "dropped answers that are not candidate labels: 's0', 's1', 's2', 's3', 's4', "
            "'s5', 's6', 's7', 's8', 's9' and 2 more",
            id="many-strays-counted",
        ),
    ],
)
def test_answers_outside_the_candidates_are_dropped_with_a_warning(
    text: str, expected: list[str], warning: str
) -> None:
    result = TASK.parse(text, classify_spec(), [])
    assert result.output == {"labels": expected}
    assert result.warnings == [warning]


@pytest.mark.parametrize(
    "text",
    [
        pytest.param('{"labels": ["dog"]}', id="only-strays-is-not-none-apply"),
        pytest.param('["dog", 3]', id="only-strays-mixed"),
        pytest.param("I think it is a cat.", id="prose"),
        pytest.param("", id="empty"),
        pytest.param('{"labels": 3}', id="labels-not-a-list"),
        pytest.param('{"a": ["cat"], "b": ["bird"]}', id="object-without-labels"),
        pytest.param("42", id="number"),
        pytest.param('{"labels": ["cat", "bi', id="truncated"),
    ],
)
def test_unreadable_answers_are_errors(text: str) -> None:
    with pytest.raises(ModelOutputInvalid) as caught:
        TASK.parse(text, classify_spec(), [])
    assert caught.value.raw_text == text


def test_request_lists_the_candidates_and_restricts_the_schema() -> None:
    request = TASK.build_request(classify_spec(prompt="Photos from a pet shelter."))
    for label in LABELS:
        assert f'- "{label}"' in request.prompt
    assert request.prompt.endswith("More context: Photos from a pet shelter.")
    assert request.response_json_schema == {
        "type": "object",
        "properties": {
            "labels": {"type": "array", "items": {"type": "string", "enum": list(LABELS)}}
        },
        "required": ["labels"],
    }
    assert request.spatial is False


def test_request_without_context() -> None:
    assert "More context" not in TASK.build_request(classify_spec()).prompt


@pytest.mark.parametrize(
    "spec",
    [
        pytest.param(classify_spec(labels=()), id="no-labels"),
        pytest.param(classify_spec(labels=("cat", "")), id="empty-label"),
        pytest.param(classify_spec(labels=("cat", "  ")), id="blank-label"),
        pytest.param(classify_spec(labels=("cat", "dog", "cat")), id="duplicate"),
        pytest.param(classify_spec(labels=("Cat", " cat ")), id="duplicate-by-case-and-space"),
    ],
)
def test_check_rejects_bad_labels(spec: TaskSpec) -> None:
    with pytest.raises(InvalidJob, match="labels") as caught:
        TASK.check(spec)
    assert caught.value.details["field"] == "labels"


@pytest.mark.parametrize("image_count", [0, 2])
def test_check_takes_exactly_one_image(image_count: int) -> None:
    with pytest.raises(InvalidJob, match="images"):
        TASK.check(TaskSpec(task="classify", image_count=image_count, labels=LABELS))


def test_check_accepts_good_labels() -> None:
    TASK.check(classify_spec())
