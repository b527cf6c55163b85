"""Records are typed, and their JSON is the contract's: old records read, new ones the same."""

from __future__ import annotations

import json

from tasks.errors import ModelOutputInvalid
from worker.contract.records import (
    ErrorRecord,
    ImageRecord,
    ResultRecord,
    Usage,
    error_record,
    json_bytes,
    read_record,
)

# result.json and error.json as the worker wrote them before records were typed (and
# before fingerprints): readers must keep reading them
OLD_RESULT = {
    "schema_version": 1,
    "job_id": "invoice-0042",
    "task": "detect",
    "status": "succeeded",
    "model": "gemini-2.5-flash",
    "model_version": "gemini-2.5-flash",
    "images": [
        {
            "uri": "s3://inbox/photos/a.jpg",
            "sha256": "ab" * 32,
            "mime_type": "image/jpeg",
            "width": 4032,
            "height": 3024,
            "transport": "inline",
            "sent_width": 4032,
            "sent_height": 3024,
        }
    ],
    "output": {
        "objects": [{"label": "cupcake", "box_2d": [384, 65, 562, 203], "box": [1, 2, 3, 4]}]
    },
    "artifacts": {"overlay": "s3://results/vision/invoice-0042/attempts/1-ab/overlay.png"},
    "usage": {
        "prompt_tokens": 1290,
        "output_tokens": 310,
        "total_tokens": 1600,
        "thoughts_tokens": 0,
        "estimated_image_tokens": 1290,
    },
    "warnings": [],
    "timings_ms": {"fetch": 12.5, "prepare": 40.1},
    "attempt": 1,
    "attempt_id": "1-ab",
    "finish_reason": "STOP",
    "completed_at": "2026-11-01T10:00:00.000Z",
}
OLD_ERROR = {
    "schema_version": 1,
    "job_id": "invoice-0043",
    "task": "caption",
    "status": "failed",
    "error": {
        "code": "invalid_image",
        "message": "not an image: looks like PDF",
        "retryable": False,
    },
    "attempts": 1,
    "failed_at": "2026-11-01T10:00:00.000Z",
}


def test_old_records_are_read() -> None:
    result = read_record(json.dumps(OLD_RESULT).encode())
    assert isinstance(result, ResultRecord)
    assert result.fingerprint is None  # older than fingerprints: taken as the job's own
    assert result.images[0].width == 4032 and result.usage.total_tokens == 1600
    error = read_record(json.dumps(OLD_ERROR).encode())
    assert isinstance(error, ErrorRecord)
    assert (error.error.code, error.attempts, error.job) == ("invalid_image", 1, None)


def test_a_new_result_is_the_contracts_json_byte_for_byte() -> None:
    # the fields added since: the call's cost, the media resolution and the answer
    # reused (issue 12), the mode (issue 13), the job's fingerprint
    usage = {**OLD_RESULT["usage"], "cost_usd": None}  # type: ignore[dict-item]
    expected = {
        **OLD_RESULT,
        "usage": usage,
        "fingerprint": "f" * 32,
        "media_resolution": None,
        "mode": "interactive",
        "answer_reused_from": None,
    }
    record = ResultRecord(
        job_id="invoice-0042",
        task="detect",
        model="gemini-2.5-flash",
        model_version="gemini-2.5-flash",
        images=[ImageRecord(**OLD_RESULT["images"][0])],  # type: ignore[arg-type]
        output=OLD_RESULT["output"],  # type: ignore[arg-type]
        artifacts=OLD_RESULT["artifacts"],  # type: ignore[arg-type]
        usage=Usage(**OLD_RESULT["usage"]),  # type: ignore[arg-type]
        warnings=[],
        timings_ms={"fetch": 12.5, "prepare": 40.1},
        attempt=1,
        attempt_id="1-ab",
        finish_reason="STOP",
        completed_at="2026-11-01T10:00:00.000Z",
        fingerprint="f" * 32,
    )
    assert record.to_json_bytes() == json_bytes(expected)


def test_an_error_record_keeps_the_errors_details_in_order() -> None:
    record = error_record(
        job_id="j",
        task="detect",
        error=ModelOutputInvalid("unreadable", raw_text="x" * 10),
        attempts=3,
        fingerprint="f",
        job={"task": "detect"},
    )
    data = json.loads(record.to_json_bytes())
    assert list(data) == [
        "schema_version",
        "job_id",
        "task",
        "status",
        "error",
        "attempts",
        "failed_at",
        "fingerprint",
        "job",
    ]
    assert list(data["error"]) == ["code", "message", "retryable", "raw_text"]
    assert read_record(record.to_json_bytes()) == record
