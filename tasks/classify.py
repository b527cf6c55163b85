"""classify: one image + candidate labels -> the candidates that apply (``{"labels": [...]}``).

Multi-label: the answer is any subset of the candidates, in the model's order, spelled
exactly as the job spelled them. The request carries a JSON schema whose items are an enum
of the candidates; the parser still restricts the answer itself, because not every model
or endpoint enforces the enum.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

from tasks.base import (
    ImageSize,
    ModelRequest,
    TaskOutput,
    TaskSpec,
    VisionTask,
    check_common,
    prompt_or_none,
)
from tasks.errors import InvalidJob, ModelOutputInvalid
from tasks.model_json import extract_json

# how much of a stray answer a warning quotes, and how many stray answers it lists
WARNING_LABEL_MAX_CHARS = 60
WARNING_MAX_LABELS = 10


class ClassifyTask:
    name: str = "classify"
    min_images: int = 1
    max_images: int = 1

    def check(self, spec: TaskSpec) -> None:
        check_common(self, spec, uses_labels=True)
        candidate_labels(spec)

    def build_request(self, spec: TaskSpec) -> ModelRequest:
        candidates = candidate_labels(spec)
        listed = "\n".join(f"- {json.dumps(label, ensure_ascii=False)}" for label in candidates)
        prompt = (
            "Classify this image. Candidate labels:\n"
            f"{listed}\n"
            "Answer with every candidate label that applies to the image, spelled exactly as "
            "listed, or with an empty list if none applies."
        )
        context = prompt_or_none(spec)
        if context is not None:
            prompt = f"{prompt}\n\nMore context: {context}"
        return ModelRequest(prompt=prompt, response_json_schema=labels_schema(candidates))

    def parse(self, text: str, spec: TaskSpec, images: Sequence[ImageSize]) -> TaskOutput:
        candidates = candidate_labels(spec)
        by_key = {_match_key(label): label for label in candidates}
        answers = _answers(text, by_key)
        chosen: list[str] = []
        strays: list[str] = []
        for answer in answers:
            label = by_key.get(_match_key(answer)) if isinstance(answer, str) else None
            if label is None:
                stray = answer if isinstance(answer, str) else json.dumps(answer)
                if stray not in strays:
                    strays.append(stray)
            elif label not in chosen:
                chosen.append(label)
        if answers and not chosen:
            # an empty answer must be the model's own "none applies", never what is left
            # after dropping everything it said
            raise ModelOutputInvalid(
                f"model answered no candidate label (it said {_quote(strays)})", raw_text=text
            )
        warnings = []
        if strays:
            warnings.append(f"dropped answers that are not candidate labels: {_quote(strays)}")
        return TaskOutput(output={"labels": chosen}, warnings=warnings)


def candidate_labels(spec: TaskSpec) -> tuple[str, ...]:
    """The job's labels, checked: at least one, none blank, no two alike once trimmed and
    case-folded (they would be the same answer). InvalidJob naming `labels` otherwise."""
    labels = spec.labels
    if not labels:
        raise InvalidJob("labels are required for classify (the candidate labels)", field="labels")
    seen: dict[str, str] = {}
    for label in labels:
        if not isinstance(label, str) or not label.strip():
            raise InvalidJob(
                f"labels: every label must be a non-empty string, got {label!r}", field="labels"
            )
        key = _match_key(label)
        if key in seen:
            raise InvalidJob(
                f"labels: {_shorten(seen[key])!r} and {_shorten(label)!r} are the same label",
                field="labels",
            )
        seen[key] = label
    return tuple(labels)


def labels_schema(candidates: Sequence[str]) -> dict[str, Any]:
    """The response JSON schema: ``{"labels": [...]}`` with items from the candidates."""
    return {
        "type": "object",
        "properties": {
            "labels": {
                "type": "array",
                "items": {"type": "string", "enum": list(candidates)},
            }
        },
        "required": ["labels"],
    }


def _answers(text: str, by_key: dict[str, str]) -> list[Any]:
    """The model's labels: ``{"labels": [...]}``, a bare list, or a single string."""
    try:
        value = extract_json(text)
    except ModelOutputInvalid:
        # a plain-text answer that is exactly one candidate is unambiguous
        if _match_key(text) in by_key:
            return [text.strip()]
        raise
    if isinstance(value, dict):
        if "labels" in value:
            value = value["labels"]
        elif len(value) == 1:
            (value,) = value.values()
        else:
            raise ModelOutputInvalid(
                "model output is a JSON object without a 'labels' member", raw_text=text
            )
    if isinstance(value, str):
        return [value]
    if isinstance(value, list):
        return value
    raise ModelOutputInvalid(
        f"model output is a JSON {type(value).__name__}, not a list of labels", raw_text=text
    )


def _match_key(label: str) -> str:
    return label.strip().casefold()


def _shorten(label: str) -> str:
    if len(label) <= WARNING_LABEL_MAX_CHARS:
        return label
    return label[: WARNING_LABEL_MAX_CHARS - 1] + "…"


def _quote(labels: Sequence[str]) -> str:
    quoted = ", ".join(repr(_shorten(label)) for label in labels[:WARNING_MAX_LABELS])
    if len(labels) > WARNING_MAX_LABELS:
        quoted += f" and {len(labels) - WARNING_MAX_LABELS} more"
    return quoted


TASK: VisionTask = ClassifyTask()
