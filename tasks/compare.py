"""compare: two or more images in one request -> a comparison (``{"text": ...}``).

The images go first, in the job's order, then the question; the prompt tells the model the
images are numbered in that order so its answer can refer to them unambiguously.
"""

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

DEFAULT_QUESTION = "Compare these images. Describe what they have in common and how they differ."


class CompareTask:
    name: str = "compare"
    min_images: int = 2
    max_images: int = MAX_IMAGES_PER_REQUEST

    def check(self, spec: TaskSpec) -> None:
        check_common(self, spec)

    def build_request(self, spec: TaskSpec) -> ModelRequest:
        question = prompt_or_none(spec) or DEFAULT_QUESTION
        return ModelRequest(
            prompt=(
                f"Compare the {spec.image_count} images above. They are numbered Image 1 to "
                f"Image {spec.image_count} in the order given; refer to them by number. "
                f"{question}"
            )
        )

    def parse(self, text: str, spec: TaskSpec, images: Sequence[ImageSize]) -> TaskOutput:
        return text_output(text)


TASK: VisionTask = CompareTask()
