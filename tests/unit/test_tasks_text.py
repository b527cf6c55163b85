"""caption and vqa: text in, text out."""

from __future__ import annotations

import pytest

from tasks.base import TaskSpec, VisionTask
from tasks.caption import DEFAULT_PROMPT
from tasks.caption import TASK as CAPTION
from tasks.errors import InvalidJob, ModelOutputInvalid
from tasks.vqa import TASK as VQA


@pytest.mark.parametrize(
    ("prompt", "expected"),
    [
        pytest.param(None, DEFAULT_PROMPT, id="default"),
        pytest.param("  ", DEFAULT_PROMPT, id="blank-is-default"),
        pytest.param("Caption this in French.", "Caption this in French.", id="override"),
    ],
)
def test_caption_prompt(prompt: str | None, expected: str) -> None:
    request = CAPTION.build_request(TaskSpec(task="caption", image_count=1, prompt=prompt))
    assert request.prompt == expected
    assert request.response_json_schema is None
    assert request.spatial is False


@pytest.mark.parametrize("task", [CAPTION, VQA], ids=["caption", "vqa"])
@pytest.mark.parametrize(
    ("text", "expected"),
    [
        pytest.param("A cat on a sofa.", "A cat on a sofa.", id="plain"),
        pytest.param("\n  A cat on a sofa.  \n", "A cat on a sofa.", id="stripped"),
    ],
)
def test_text_answer(task: VisionTask, text: str, expected: str) -> None:
    spec = TaskSpec(task="x", image_count=1, prompt="What is this?")
    assert task.parse(text, spec, []).output == {"text": expected}


@pytest.mark.parametrize("task", [CAPTION, VQA], ids=["caption", "vqa"])
@pytest.mark.parametrize("text", ["", "  \n "])
def test_empty_answer_is_an_error(task: VisionTask, text: str) -> None:
    spec = TaskSpec(task="x", image_count=1, prompt="What is this?")
    with pytest.raises(ModelOutputInvalid) as caught:
        task.parse(text, spec, [])
    assert caught.value.raw_text == text


@pytest.mark.parametrize(
    ("spec", "field"),
    [
        pytest.param(TaskSpec(task="caption", image_count=2), "images", id="two-images"),
        pytest.param(TaskSpec(task="caption", image_count=0), "images", id="no-image"),
        pytest.param(
            TaskSpec(task="caption", image_count=1, labels=("cat",)), "labels", id="labels"
        ),
    ],
)
def test_caption_check_rejects(spec: TaskSpec, field: str) -> None:
    with pytest.raises(InvalidJob) as caught:
        CAPTION.check(spec)
    assert caught.value.details["field"] == field


@pytest.mark.parametrize("prompt", [None, "", "   "])
def test_vqa_requires_a_prompt(prompt: str | None) -> None:
    spec = TaskSpec(task="vqa", image_count=1, prompt=prompt)
    with pytest.raises(InvalidJob, match="prompt is required for vqa"):
        VQA.check(spec)
    with pytest.raises(InvalidJob, match="prompt is required for vqa"):
        VQA.build_request(spec)


@pytest.mark.parametrize(
    ("image_count", "ok"),
    [
        pytest.param(1, True, id="one"),
        pytest.param(3600, True, id="3600"),
        pytest.param(0, False, id="none"),
        pytest.param(3601, False, id="3601"),
    ],
)
def test_vqa_image_count(image_count: int, ok: bool) -> None:
    spec = TaskSpec(task="vqa", image_count=image_count, prompt="How many cats?")
    if ok:
        VQA.check(spec)
    else:
        with pytest.raises(InvalidJob, match="images: vqa takes 1 to 3600"):
            VQA.check(spec)


def test_vqa_request_is_the_question() -> None:
    spec = TaskSpec(task="vqa", image_count=2, prompt="  Which image has more cats? ")
    assert VQA.build_request(spec).prompt == "Which image has more cats?"
