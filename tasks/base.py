"""What every vision task is made of: the request it asks for and the parser of the answer.

A task is a module in `tasks/` exposing a `TASK` object that satisfies `VisionTask`;
`tasks.registry` finds it by name. Nothing here does I/O: the shell (`worker/`) sends the
request, and hands the model's text back to `parse`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from tasks.errors import InvalidJob, ModelOutputInvalid

# Gemini takes up to 3,600 image files per request (2.x and 1.5 models)
MAX_IMAGES_PER_REQUEST = 3600


@dataclass(frozen=True)
class TaskSpec:
    """The parts of a job a task looks at (already type-checked by the job model)."""

    task: str
    image_count: int
    prompt: str | None = None
    labels: tuple[str, ...] = ()
    response_schema: Mapping[str, Any] | None = None
    max_items: int = 25
    # segment: probability maps are foreground where strictly above this (0-255)
    mask_threshold_u8: int = 127


@dataclass(frozen=True)
class ImageSize:
    """Pixel size of an image as the model saw it: upright (EXIF orientation applied)."""

    width_px: int
    height_px: int


@dataclass(frozen=True)
class ModelRequest:
    """What to ask, independent of any SDK.

    The images go first, then `prompt` (the guide's advice for single-image requests).
    With `response_json_schema` set, the shell asks for `application/json` with that
    schema and must not repeat the schema in the prompt.
    """

    prompt: str
    system_instruction: str | None = None
    response_json_schema: Mapping[str, Any] | None = None
    # Spatial tasks (boxes, masks) work better without thinking; the shell maps this to
    # the model family's own knob (thinking_budget=0 on 2.5, nothing on families without).
    spatial: bool = False
    # Scale images to fit this square before sending (the guide's thumbnail([1024, 1024])
    # for segmentation); answers are relative (0-1000, box-relative masks), so they still
    # map onto the original upright image. None sends images as prepared.
    fit_within_px: int | None = None


@dataclass
class TaskOutput:
    """The `output` object of result.json plus warnings for its `warnings` list."""

    output: dict[str, Any]
    warnings: list[str] = field(default_factory=list)
    # segment: one mask per entry of output["objects"] (None where the model's mask could
    # not be decoded); the shell writes them as PNGs and adds their URIs to the objects
    masks: list[Any] | None = None


class VisionTask(Protocol):
    name: str
    min_images: int
    max_images: int  # 3600 where the task takes many

    def check(self, spec: TaskSpec) -> None:
        """Raise InvalidJob when the job lacks what this task needs (naming the field)."""

    def build_request(self, spec: TaskSpec) -> ModelRequest: ...

    def parse(self, text: str, spec: TaskSpec, images: Sequence[ImageSize]) -> TaskOutput:
        """Read the model's text; raise ModelOutputInvalid (raw text kept) when unreadable."""
        ...


# --- helpers shared by the task modules ---------------------------------------------


def check_common(
    task: VisionTask,
    spec: TaskSpec,
    *,
    uses_labels: bool = False,
    uses_response_schema: bool = False,
) -> None:
    """Image count within the task's range; `labels` / `response_schema` only where the
    task reads them (the contract rejects what a job would silently lose)."""
    if not task.min_images <= spec.image_count <= task.max_images:
        wanted = (
            f"exactly {task.min_images}"
            if task.min_images == task.max_images
            else f"{task.min_images} to {task.max_images}"
        )
        raise InvalidJob(
            f"images: {task.name} takes {wanted} image(s), got {spec.image_count}",
            field="images",
        )
    if spec.labels and not uses_labels:
        raise InvalidJob(f"labels are not used by {task.name} (only by classify)", field="labels")
    if spec.response_schema is not None and not uses_response_schema:
        raise InvalidJob(
            f"response_schema is not used by {task.name} (only by custom)",
            field="response_schema",
        )


def prompt_or_none(spec: TaskSpec) -> str | None:
    """The job's prompt, stripped; None when absent or blank."""
    if spec.prompt is None:
        return None
    return spec.prompt.strip() or None


def text_output(text: str) -> TaskOutput:
    """``{"text": ...}`` of a free-text answer; an empty answer is not an answer."""
    answer = text.strip()
    if not answer:
        raise ModelOutputInvalid("model returned an empty answer", raw_text=text)
    return TaskOutput(output={"text": answer})
