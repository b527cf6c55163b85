from __future__ import annotations

import pytest

from tasks.base import ImageSize, TaskSpec
from tasks.errors import InvalidJob, ModelOutputInvalid
from tasks.registry import get_task


def test_compare_is_registered_by_its_module() -> None:
    assert get_task("compare").name == "compare"


@pytest.mark.parametrize("count", [0, 1])
def test_compare_needs_two_images(count: int) -> None:
    with pytest.raises(InvalidJob, match="images"):
        get_task("compare").check(TaskSpec(task="compare", image_count=count))


def test_question_comes_after_the_numbering() -> None:
    request = get_task("compare").build_request(
        TaskSpec(task="compare", image_count=3, prompt="Which one is red?")
    )
    assert "Image 1 to Image 3" in request.prompt
    assert request.prompt.endswith("Which one is red?")
    assert request.response_json_schema is None


def test_default_question() -> None:
    request = get_task("compare").build_request(TaskSpec(task="compare", image_count=2))
    assert "differ" in request.prompt


def test_answer_is_text_and_empty_is_invalid() -> None:
    task = get_task("compare")
    spec = TaskSpec(task="compare", image_count=2)
    sizes = [ImageSize(10, 10), ImageSize(10, 10)]
    assert task.parse(" Image 1 is red. ", spec, sizes).output == {"text": "Image 1 is red."}
    with pytest.raises(ModelOutputInvalid):
        task.parse("  ", spec, sizes)
