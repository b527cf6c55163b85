"""vqa: a question about one or more images -> the answer (``{"text": ...}``)."""

from __future__ import annotations

from collections.abc import Sequence

from tasks.base import (
    MAX_IMAGES_PER_REQUEST,
    ImageSize,
    ModelRequest,
    TaskOutput,
    TaskSpec,
    VisionTask,
    check_common,
    prompt_or_none,
    text_output,
)
from tasks.errors import InvalidJob


class VqaTask:
    name: str = "vqa"
    min_images: int = 1
    max_images: int = MAX_IMAGES_PER_REQUEST

    def check(self, spec: TaskSpec) -> None:
        check_common(self, spec)
        if prompt_or_none(spec) is None:
            raise InvalidJob("prompt is required for vqa (the question)", field="prompt")

    def build_request(self, spec: TaskSpec) -> ModelRequest:
        question = prompt_or_none(spec)
        if question is None:
            raise InvalidJob("prompt is required for vqa (the question)", field="prompt")
        return ModelRequest(prompt=question)

    def parse(self, text: str, spec: TaskSpec, images: Sequence[ImageSize]) -> TaskOutput:
        return text_output(text)


TASK: VisionTask = VqaTask()
