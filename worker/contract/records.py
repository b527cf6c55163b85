"""What a job leaves behind, and the bounds on it.

Everything in a record comes, in the end, from a producer or a model, so every part of
it has a size limit enforced here, before it costs storage or Redis memory:

    what                               bound                          when it is hit
    ---------------------------------  -----------------------------  -------------------------
    the job kept with a failure        JOB_SUMMARY_MAX_BYTES (16 KB)  a summary that says so
      (dead-letter entry, error.json)                                 ("truncated": true)
    model text in a record             MODEL_TEXT_MAX_CHARS (1 MB)    cut, with a warning /
      (output.text, raw_text)                                         "raw_text_cut": true
    structured answer (output.data)    MODEL_TEXT_MAX_CHARS           model_output_invalid
    an error's message                 MESSAGE_MAX_CHARS              cut ("…")
    other error details                DETAIL_MAX_CHARS               cut ("…")
    the error record kept in Redis     PENDING_RECORD_MAX_BYTES       raw_text cut to fit
      while storage is down

Records are typed (`ResultRecord`, `ErrorRecord`), written by the pipeline and read by
every reader (`read_record`: the client, the CLI, the demo), and their JSON is what
docs/contract.md describes: the models keep the contract's field order, and read records of
every earlier version.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any, Final, Literal

from pydantic import BaseModel, ConfigDict, Field

from tasks.base import TaskOutput
from tasks.errors import GvwError, ModelOutputInvalid
from worker.contract.jobs import SCHEMA_VERSION, salvage_run

JOB_SUMMARY_MAX_BYTES: Final = 16 * 1024
MODEL_TEXT_MAX_CHARS: Final = 1_000_000
MESSAGE_MAX_CHARS: Final = 4000
DETAIL_MAX_CHARS: Final = 1000
PENDING_RECORD_MAX_BYTES: Final = 64 * 1024

# fields of a job kept in a summary, each cut to a few hundred characters
_SUMMARY_FIELDS: Final = ("job_id", "task", "model", "output", "prompt")
_SUMMARY_FIELD_CHARS: Final = 1000
_SUMMARY_LIST_ITEMS: Final = 20
_SUMMARY_ITEM_CHARS: Final = 300
_KNOWN_FIELDS: Final = frozenset(
    {"job_id", "task", "images", "prompt", "labels", "response_schema", "model", "output"}
    | {"options", "notify"}
)


def json_bytes(record: dict[str, Any]) -> bytes:
    return json.dumps(record, ensure_ascii=False, indent=2).encode() + b"\n"


def now_iso() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


# --- the job, summarized -------------------------------------------------------------------


def summarize_job(raw: Any) -> Any:
    """The job as sent when its JSON fits `JOB_SUMMARY_MAX_BYTES`; otherwise a summary of
    it (``"truncated": true``) that does: the small fields cut short, the first images and
    labels, the names of unknown fields. Never raises, whatever the producer sent."""
    try:
        text = json.dumps(raw, ensure_ascii=False, separators=(",", ":"))
    except (TypeError, ValueError):
        text = None
    if text is not None and len(text.encode()) <= JOB_SUMMARY_MAX_BYTES:
        return raw
    size = len(text.encode()) if text is not None else None
    if not isinstance(raw, dict):
        return {"truncated": True, "size_bytes": size, "not_an_object": _clip(raw, 2000)}
    summary: dict[str, Any] = {"truncated": True, "size_bytes": size}
    for name in _SUMMARY_FIELDS:
        if name in raw:
            summary[name] = _clip(raw[name], _SUMMARY_FIELD_CHARS)
    for name in ("images", "labels"):
        value = raw.get(name)
        if isinstance(value, list):
            summary[name] = [_clip(v, _SUMMARY_ITEM_CHARS) for v in value[:_SUMMARY_LIST_ITEMS]]
            summary[f"{name}_count"] = len(value)
        elif value is not None:
            summary[name] = _clip(value, _SUMMARY_ITEM_CHARS)
    for name in ("options", "response_schema"):
        if name in raw:
            summary[name] = _small_or_size(raw[name])
    unknown = [str(k)[:64] for k in raw if k not in _KNOWN_FIELDS]
    if unknown:
        summary["unknown_fields"] = unknown[:_SUMMARY_LIST_ITEMS]
    return summary


def _clip(value: Any, limit: int) -> Any:
    if isinstance(value, str):
        return value if len(value) <= limit else value[:limit] + "…"
    if value is None or isinstance(value, bool | int | float):
        return value if not isinstance(value, int) or abs(value) < 10**18 else str(value)[:40]
    shown = repr(value)
    return shown if len(shown) <= limit else shown[:limit] + "…"


def _small_or_size(value: Any) -> Any:
    try:
        text = json.dumps(value, ensure_ascii=False)
    except (TypeError, ValueError):
        return _clip(value, 200)
    return value if len(text) <= 1000 else f"<{len(text)} characters of JSON>"


def is_summary(job: Any) -> bool:
    return isinstance(job, dict) and job.get("truncated") is True and "size_bytes" in job


# --- model text ---------------------------------------------------------------------------


def cap_text(text: str, *, what: str) -> tuple[str, str | None]:
    """``text`` cut to `MODEL_TEXT_MAX_CHARS`, and the warning that says so (None if whole)."""
    if len(text) <= MODEL_TEXT_MAX_CHARS:
        return text, None
    return text[:MODEL_TEXT_MAX_CHARS], (
        f"{what} of {len(text):,} characters cut to {MODEL_TEXT_MAX_CHARS:,} in this record"
    )


def bounded_output(parsed: TaskOutput) -> tuple[dict[str, Any], list[str]]:
    """The task's output and warnings, with model text cut to its bound. A structured
    answer (``data``) cannot be cut and stay what the schema asked for: above the bound it
    is unreadable (ModelOutputInvalid), like any answer that cannot be used."""
    output = dict(parsed.output)
    warnings = list(parsed.warnings)
    text = output.get("text")
    if isinstance(text, str):
        output["text"], warning = cap_text(text, what="the model's text")
        if warning:
            warnings.append(warning)
    if "data" in output:
        size = len(json.dumps(output["data"], ensure_ascii=False))
        if size > MODEL_TEXT_MAX_CHARS:
            raise ModelOutputInvalid(
                f"the model's structured answer is {size:,} characters of JSON, above the "
                f"{MODEL_TEXT_MAX_CHARS:,} a record keeps"
            )
    return output, warnings


# --- records ---------------------------------------------------------------------------------


def bounded_error(error: GvwError) -> dict[str, Any]:
    """The ``error`` object of error.json, every part of it bounded."""
    record: dict[str, Any] = {}
    for key, value in error.to_record().items():
        if key == "raw_text" and isinstance(value, str):
            record["raw_text"], warning = cap_text(value, what="raw_text")
            if warning:
                record["raw_text_cut"] = True
                record["raw_text_chars"] = len(value)
        elif key == "message" and isinstance(value, str):
            record[key] = _cut(value, MESSAGE_MAX_CHARS)
        elif isinstance(value, str):
            record[key] = _cut(value, DETAIL_MAX_CHARS)
        else:
            record[key] = value
    return record


def _cut(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


class RecordModel(BaseModel):
    """A record as written to storage: fields in the contract's order; readers accept
    the fields of later versions (extra) and records older than `fingerprint`."""

    model_config = ConfigDict(extra="allow")

    def to_json_bytes(self) -> bytes:
        return json_bytes(self.model_dump(mode="json"))


def _absent(value: object) -> bool:
    return value is None


class ImageRecord(RecordModel):
    uri: str
    # None when the worker never read the bytes (transport "url"): see etag and
    # s3_checksum_sha256 for the object's identity then
    sha256: str | None
    mime_type: str
    width: int
    height: int
    transport: str
    # what the model saw, when a reduced copy was sent (segment)
    sent_width: int | None = None
    sent_height: int | None = None
    # transport "url" only (left out otherwise): the object Gemini fetched
    size_bytes: int | None = Field(default=None, exclude_if=_absent)
    etag: str | None = Field(default=None, exclude_if=_absent)
    version_id: str | None = Field(default=None, exclude_if=_absent)
    s3_checksum_sha256: str | None = Field(default=None, exclude_if=_absent)


class Usage(RecordModel):
    prompt_tokens: int = 0
    output_tokens: int = 0
    total_tokens: int = 0
    thoughts_tokens: int = 0
    estimated_image_tokens: int = 0
    # at the price table's rates (None: a model the table does not know)
    cost_usd: float | None = None


class ReusedAnswer(RecordModel):
    """The job that paid for an answer this job reused, and when it was answered."""

    job_id: str
    answered_at: str


class ResultRecord(RecordModel):
    """result.json (docs/contract.md, "Results")."""

    schema_version: int = SCHEMA_VERSION
    job_id: str
    task: str
    status: Literal["succeeded"] = "succeeded"
    model: str
    model_version: str | None = None
    images: list[ImageRecord]
    output: dict[str, Any]
    artifacts: dict[str, str] = Field(default_factory=dict)
    usage: Usage = Field(default_factory=Usage)
    warnings: list[str] = Field(default_factory=list)
    # the worker's own time by stage in this attempt ("publish" is still running)
    timings_ms: dict[str, float] = Field(default_factory=dict)
    attempt: int = 1
    attempt_id: str = ""
    finish_reason: str = ""
    completed_at: str = Field(default_factory=now_iso)
    fingerprint: str | None = None
    # the job's options.media_resolution (None: the model's default)
    media_resolution: str | None = None
    # how the answer was bought: "interactive" or "batch" (the Batch API's price)
    mode: str = "interactive"
    # the answer came from the answer cache (GVW_ANSWER_CACHE_TTL_S): whose it was
    answer_reused_from: ReusedAnswer | None = None
    # the run the job is counted in (left out when it names none)
    run: str | None = Field(default=None, exclude_if=_absent)


class ErrorDetail(RecordModel):
    """error.json's `error`: the code, the message, and the error's own details."""

    code: str
    message: str
    retryable: bool = False


class ErrorRecord(RecordModel):
    """error.json (docs/contract.md, "Results")."""

    schema_version: int = SCHEMA_VERSION
    job_id: str
    task: str | None = None
    status: Literal["failed"] = "failed"
    error: ErrorDetail
    attempts: int = 1
    failed_at: str = Field(default_factory=now_iso)
    # what identifies the job this id was used for (a reuse by another job is refused)
    fingerprint: str | None = None
    job: Any = None
    # the run the job is counted in (left out when it names none)
    run: str | None = Field(default=None, exclude_if=_absent)


class Outcome(BaseModel):
    """How one run of the task ended: what the task returns to Celery (`as_dict`)."""

    job_id: str
    # batched: the job waits for a batch's answer (worker.batch.follower sends it again)
    status: Literal["succeeded", "failed", "batched"]
    record_uri: str
    already_done: bool = False
    timings_s: dict[str, float] = Field(default_factory=dict)
    # what a completion event says of the end (worker/events/): the cost recorded in
    # result.json (None for a failure, or a model without a price), the error's code
    # (None on success), and the fingerprint the job's id was claimed with (its event's
    # id is derived from it: a redelivery finds the same)
    cost_usd: float | None = None
    error_code: str | None = None
    fingerprint: str | None = None

    def as_dict(self) -> dict[str, Any]:
        return {
            "job_id": self.job_id,
            "status": self.status,
            "uri": self.record_uri,
            "already_done": self.already_done,
        }


def read_record(data: bytes) -> ResultRecord | ErrorRecord:
    """A result.json or error.json as written by any version of the worker."""
    raw = json.loads(data)
    if isinstance(raw, dict) and raw.get("status") == "succeeded":
        return ResultRecord.model_validate(raw)
    return ErrorRecord.model_validate(raw)


def error_record(
    *,
    job_id: str,
    task: str | None,
    error: GvwError,
    attempts: int,
    fingerprint: str,
    job: Any,
) -> ErrorRecord:
    return ErrorRecord(
        job_id=job_id,
        task=task,
        error=ErrorDetail.model_validate(bounded_error(error)),
        attempts=attempts,
        fingerprint=fingerprint,
        job=summarize_job(job),
        run=salvage_run(job),
    )


def shrink_for_redis(record: ErrorRecord) -> bytes:
    """The record as kept in the dead-letter index until storage takes it: within
    `PENDING_RECORD_MAX_BYTES`, raw_text cut further where needed (and marked so)."""
    data = record.to_json_bytes()
    if len(data) <= PENDING_RECORD_MAX_BYTES:
        return data
    error = record.error.model_dump(mode="json")
    raw = error.get("raw_text")
    if isinstance(raw, str):
        keep = max(0, PENDING_RECORD_MAX_BYTES // 2 - 1024)
        error["raw_text"] = raw[:keep]
        error["raw_text_cut"] = True
        error.setdefault("raw_text_chars", len(raw))
    shrunk = record.model_copy(update={"error": ErrorDetail.model_validate(error)})
    data = shrunk.to_json_bytes()
    if len(data) > PENDING_RECORD_MAX_BYTES:
        minimal = ErrorDetail.model_validate(_minimal(error))
        data = shrunk.model_copy(update={"job": None, "error": minimal}).to_json_bytes()
    return data


def _minimal(error: dict[str, Any]) -> dict[str, Any]:
    return {k: error[k] for k in ("code", "message", "retryable") if k in error}
