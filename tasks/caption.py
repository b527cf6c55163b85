"""caption: one image -> a short description (``{"text": ...}``)."""

from __future__ import annotations

from collections.abc import Sequence

from tasks.base import (
    ImageSize,
    ModelRequest,
    TaskOutput,
    TaskSpec,
    VisionTask,
    check_common,
    prompt_or_none,
    text_output,
)

DEFAULT_PROMPT = (
    "Write a caption for this image: one or two sentences that say what it shows, the main "
    "subject first, then what is happening and the setting. Answer with the caption only."
)


class CaptionTask:
    name: str = "caption"
    min_images: int = 1
    max_images: int = 1

    def check(self, spec: TaskSpec) -> None:
        check_common(self, spec)

    def build_request(self, spec: TaskSpec) -> ModelRequest:
        # the job's prompt replaces the default instruction (a style, a language, a length)
        return ModelRequest(prompt=prompt_or_none(spec) or DEFAULT_PROMPT)

    def parse(self, text: str, spec: TaskSpec, images: Sequence[ImageSize]) -> TaskOutput:
        return text_output(text)


TASK: VisionTask = CaptionTask()
