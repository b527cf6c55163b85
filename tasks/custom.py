"""custom: the job's own instruction over 1..3600 images.

Without ``response_schema`` the answer is text (``{"text": ...}``). With one, the model is
asked for JSON with that schema and the answer is the parsed JSON (``{"data": ...}``),
checked against the schema here too (`tasks.json_schema_check`), because a schema sent
to the model is guidance that not every model or endpoint enforces.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any

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
from tasks.errors import InvalidJob, ModelOutputInvalid
from tasks.json_schema_check import find_violation, schema_problem
from tasks.model_json import extract_json

# a response schema is a description of an answer, not a payload
RESPONSE_SCHEMA_MAX_BYTES = 64 * 1024


class CustomTask:
    name: str = "custom"
    min_images: int = 1
    max_images: int = MAX_IMAGES_PER_REQUEST

    def check(self, spec: TaskSpec) -> None:
        check_common(self, spec, uses_response_schema=True)
        _instruction(spec)
        if spec.response_schema is not None:
            check_response_schema(spec.response_schema)

    def build_request(self, spec: TaskSpec) -> ModelRequest:
        schema = spec.response_schema
        return ModelRequest(
            prompt=_instruction(spec),
            response_json_schema=dict(schema) if schema is not None else None,
        )

    def parse(self, text: str, spec: TaskSpec, images: Sequence[ImageSize]) -> TaskOutput:
        if spec.response_schema is None:
            return text_output(text)
        data = extract_json(text)
        violation = find_violation(data, spec.response_schema)
        if violation is not None:
            raise ModelOutputInvalid(
                f"model output does not match response_schema at {violation}", raw_text=text
            )
        return TaskOutput(output={"data": data})


def check_response_schema(schema: Any) -> None:
    """InvalidJob naming `response_schema` unless it is a usable JSON Schema object."""
    if not isinstance(schema, Mapping) or "type" not in schema:
        raise InvalidJob(
            'response_schema must be a JSON Schema object with a "type"',
            field="response_schema",
        )
    try:
        size = len(json.dumps(schema, ensure_ascii=False, separators=(",", ":")).encode())
    except (TypeError, ValueError, RecursionError):
        raise InvalidJob(
            "response_schema is not serializable as JSON", field="response_schema"
        ) from None
    if size > RESPONSE_SCHEMA_MAX_BYTES:
        raise InvalidJob(
            f"response_schema is {size} bytes as JSON, more than {RESPONSE_SCHEMA_MAX_BYTES}",
            field="response_schema",
        )
    problem = schema_problem(schema)
    if problem is not None:
        raise InvalidJob(f"response_schema is not usable: {problem}", field="response_schema")


def _instruction(spec: TaskSpec) -> str:
    instruction = prompt_or_none(spec)
    if instruction is None:
        raise InvalidJob("prompt is required for custom (the instruction)", field="prompt")
    return instruction


TASK: VisionTask = CustomTask()
