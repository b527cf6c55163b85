"""The job of docs/contract.md (schema version 1), validated.

A job is untrusted input from any producer: unknown fields and wrong types are refused
with a message naming the field, never coerced or ignored.
"""

from __future__ import annotations

import hashlib
import json
import re
import uuid
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, StringConstraints, ValidationError

from tasks import registry
from tasks.base import TaskSpec
from tasks.errors import InputNotAllowed, InvalidJob
from worker.storage.uris import Role, parse_uri

SCHEMA_VERSION = 1
JOB_ID_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$"
MAX_IMAGES = 3600
# completion events (docs/events.md): where a job's end is told, checked against the
# fleet's allow-list (GVW_NOTIFY_DESTINATIONS) when the job is admitted
NOTIFY_MAX_DESTINATIONS = 5
NOTIFY_DESTINATION_MAX_CHARS = 2048
_MODEL_PATTERN = r"^(models/)?[A-Za-z0-9][A-Za-z0-9._-]{0,127}$"

ImageUri = Annotated[str, StringConstraints(min_length=6, max_length=2048)]
Destination = Annotated[
    str, StringConstraints(min_length=4, max_length=NOTIFY_DESTINATION_MAX_CHARS)
]


class JobOptions(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)

    max_items: int = Field(default=25, ge=1, le=100)
    mask_threshold: int = Field(default=127, ge=0, le=254)
    # -1 asks 2.5 models for dynamic thinking; families without the knob ignore it.
    thinking_budget: int | None = Field(default=None, ge=-1, le=32768)
    temperature: float | None = Field(default=None, ge=0.0, le=2.0)
    max_output_tokens: int | None = Field(default=None, ge=1, le=65536)
    # detect and segment: draw the overlay picture (masks are written either way)
    overlay: bool = True
    # ask the model even when an identical request was answered (GVW_ANSWER_CACHE_TTL_S)
    fresh: bool = False
    # tokens spent on each image (fewer: cheaper, less detail); ultra_high: Gemini 3+ only
    media_resolution: Literal["low", "medium", "high", "ultra_high"] | None = None
    # "batch": answered through the Gemini Batch API, at the batch price, within a day
    mode: Literal["interactive", "batch"] = "interactive"


class Job(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)

    job_id: Annotated[str, StringConstraints(pattern=JOB_ID_PATTERN)]
    task: str
    images: Annotated[list[ImageUri], Field(min_length=1, max_length=MAX_IMAGES)]
    prompt: Annotated[str, StringConstraints(max_length=32_000)] | None = None
    labels: (
        Annotated[list[Annotated[str, StringConstraints(max_length=200)]], Field(max_length=500)]
        | None
    ) = None
    response_schema: dict[str, Any] | None = None
    model: Annotated[str, StringConstraints(pattern=_MODEL_PATTERN)] | None = None
    output: Annotated[str, StringConstraints(min_length=6, max_length=1024)] | None = None
    options: JobOptions = Field(default_factory=JobOptions)
    # the run the job belongs to (docs/runs.md): counted in its progress and spend, held
    # by its cost cap; not part of what the job is (its fingerprint)
    run: Annotated[str, StringConstraints(pattern=JOB_ID_PATTERN)] | None = None
    # where the job's completion event goes (webhook URLs, sqs:, sns:, celery:)
    notify: Annotated[list[Destination], Field(max_length=NOTIFY_MAX_DESTINATIONS)] | None = None

    def spec(self) -> TaskSpec:
        return TaskSpec(
            task=self.task,
            image_count=len(self.images),
            prompt=self.prompt,
            labels=tuple(self.labels or ()),
            response_schema=self.response_schema,
            max_items=self.options.max_items,
            mask_threshold_u8=self.options.mask_threshold,
        )

    def as_record(self) -> dict[str, Any]:
        return self.model_dump(mode="json", exclude_none=True)

    def fingerprint(self, folder: str) -> str:
        """What identifies this job under its id: everything that decides its answer
        (task, images, prompt, labels, schema, model, options) and where it goes (its
        results folder), not the run it is counted in nor where its end is told. A
        redelivery has the same; another job reusing the id does not. Fields as the
        producer gave them (a model left out is not GVW_MODEL), options
        with their defaults filled in."""
        # where its end is told (notify) and the run it is counted in do not change
        # the answer either, and leaving them out keeps every fingerprint taken
        # before the fields existed
        material = self.model_dump(mode="json", exclude={"job_id", "output", "notify", "run"})
        # how it is asked (interactive or batch) does not change the answer: a batch job
        # sent back to the interactive path is still the same job
        material["options"].pop("mode", None)
        material["folder"] = folder
        return _digest(material)


def raw_fingerprint(raw: Any, folder: str) -> str:
    """The fingerprint of a job that is not valid (or not even a job): its JSON as sent."""
    return _digest({"raw": raw, "folder": folder})


def _digest(material: Any) -> str:
    text = json.dumps(material, sort_keys=True, separators=(",", ":"), default=repr)
    return hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()[:32]


def new_job_id() -> str:
    return f"job-{uuid.uuid4().hex}"


def parse_job(raw: Any, *, default_job_id: str | None = None) -> Job:
    """Validate a producer's job dict. Raises InvalidJob naming every bad field."""
    if not isinstance(raw, dict):
        raise InvalidJob(f"a job must be a JSON object, got {type(raw).__name__}")
    data = dict(raw)
    if data.get("job_id") is None:
        data["job_id"] = default_job_id or new_job_id()
    try:
        job = Job.model_validate(data)
    except ValidationError as exc:
        raise InvalidJob(describe_validation_error(exc)) from exc
    task = registry.get_task(job.task)  # InvalidJob naming the known tasks
    # image count, labels and response_schema are checked per task
    task.check(job.spec())
    # every URI parsed once (worker.storage.uris), kept in its one spelling for the checks and I/O
    images = [_parsed(uri, "input", f"images.{i}") for i, uri in enumerate(job.images)]
    output = _parsed(job.output, "output", "output") if job.output is not None else None
    return job.model_copy(update={"images": images, "output": output})


def _parsed(uri: str, role: Role, where: str) -> str:
    try:
        return parse_uri(uri, role=role).text
    except InputNotAllowed:
        return uri  # a scheme we do not read: input_not_allowed when the job runs
    except InvalidJob as exc:
        raise InvalidJob(f"invalid job: {where}: {exc.message}") from exc


def describe_validation_error(exc: ValidationError) -> str:
    parts = []
    for err in exc.errors(include_url=False):
        where = ".".join(str(p) for p in err["loc"]) or "job"
        if err["type"] == "extra_forbidden":
            parts.append(f"{where}: unknown field (not part of job schema v{SCHEMA_VERSION})")
        else:
            parts.append(f"{where}: {err['msg']}")
    return "invalid job: " + "; ".join(parts)


def salvage_run(raw: Any) -> str | None:
    """The run a job that failed validation names, where that is itself valid: the job
    still counts in its run (as failed)."""
    run = raw.get("run") if isinstance(raw, dict) else None
    return run if isinstance(run, str) and re.match(JOB_ID_PATTERN, run) else None


def salvage_notify(raw: Any) -> list[str]:
    """The ``notify`` destinations of a job that failed validation, where the list itself
    is well formed (its end is still told to the destinations the fleet allows)."""
    notify = raw.get("notify") if isinstance(raw, dict) else None
    if not isinstance(notify, list) or len(notify) > NOTIFY_MAX_DESTINATIONS:
        return []
    return [d for d in notify if isinstance(d, str) and 4 <= len(d) <= NOTIFY_DESTINATION_MAX_CHARS]


def salvage_identity(raw: Any) -> tuple[str | None, str | None]:
    """job_id and output from a job that failed validation, where they are themselves valid,
    so the error record can still be written where the producer will look for it."""
    if not isinstance(raw, dict):
        return None, None
    job_id = raw.get("job_id")
    output = raw.get("output")
    ok_id = job_id if isinstance(job_id, str) and re.match(JOB_ID_PATTERN, job_id) else None
    ok_out = output if isinstance(output, str) and 6 <= len(output) <= 1024 else None
    return ok_id, ok_out
