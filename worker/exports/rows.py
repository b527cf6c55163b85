"""A job's record as one typed table row (issue 21: `gvw export`), and the table's schema.

One row per job, from its result.json or error.json as stored (any schema-1 record, old
ones included): what a user queries ("which photos show a forklift, with how many", "every
error with its code and the model's raw text", "cost per label"). The schema is versioned
like the contract (`EXPORT_SCHEMA_VERSION`, kept in the Parquet file's metadata); a column
is added, never renamed or retyped, within a version.
"""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any

import pyarrow as pa

EXPORT_SCHEMA_VERSION = 1

OBJECT_TYPE = pa.struct(
    [
        ("label", pa.string()),
        ("box", pa.list_(pa.int32())),  # [x0, y0, x1, y1] in pixels of the upright image
        ("box_2d", pa.list_(pa.int32())),  # the model's [ymin, xmin, ymax, xmax] on 0-1000
        ("mask_uri", pa.string()),
        ("mask_area", pa.int64()),
    ]
)

SCHEMA = pa.schema(
    [
        ("job_id", pa.string()),
        ("run", pa.string()),
        ("status", pa.string()),  # succeeded | failed
        ("task", pa.string()),
        ("model", pa.string()),
        ("mode", pa.string()),  # interactive | batch
        ("input_uris", pa.list_(pa.string())),
        ("text", pa.string()),  # caption, vqa, compare, custom without a schema
        ("labels", pa.list_(pa.string())),  # classify
        ("objects", pa.list_(OBJECT_TYPE)),  # detect, segment
        ("object_count", pa.int32()),
        ("data_json", pa.string()),  # custom with a schema: the answer as JSON
        ("error_code", pa.string()),
        ("error_message", pa.string()),
        ("raw_text", pa.string()),  # model_output_invalid: what the model said
        ("warnings", pa.list_(pa.string())),
        ("prompt_tokens", pa.int64()),
        ("output_tokens", pa.int64()),
        ("thoughts_tokens", pa.int64()),
        ("cost_usd", pa.float64()),
        ("attempts", pa.int32()),
        ("timings_ms", pa.map_(pa.string(), pa.float64())),
        ("completed_at", pa.timestamp("ms", tz="UTC")),
        ("record_uri", pa.string()),
    ],
    metadata={"gvw_export_schema_version": str(EXPORT_SCHEMA_VERSION)},
)


def row_of(record: dict[str, Any], record_uri: str) -> dict[str, Any]:
    """The row of one record as stored (a dict from its JSON)."""
    failed = record.get("status") != "succeeded"
    output = {} if failed else (record.get("output") or {})
    usage = record.get("usage") or {}
    error = (record.get("error") or {}) if failed else {}
    objects = [_object(o) for o in output.get("objects") or []]
    images = record.get("images") or []
    job: dict[str, Any] = record["job"] if isinstance(record.get("job"), dict) else {}
    inputs = [i.get("uri") for i in images if isinstance(i, dict)] or list(job.get("images") or [])
    return {
        "job_id": record.get("job_id"),
        "run": record.get("run"),
        "status": "failed" if failed else "succeeded",
        "task": record.get("task"),
        "model": record.get("model"),
        "mode": record.get("mode") if not failed else None,
        "input_uris": [str(u) for u in inputs],
        "text": output.get("text"),
        "labels": output.get("labels"),
        "objects": objects if "objects" in output else None,
        "object_count": len(objects) if "objects" in output else None,
        "data_json": json.dumps(output["data"], sort_keys=True) if "data" in output else None,
        "error_code": error.get("code"),
        "error_message": error.get("message"),
        "raw_text": error.get("raw_text"),
        "warnings": list(record.get("warnings") or []),
        "prompt_tokens": usage.get("prompt_tokens"),
        "output_tokens": usage.get("output_tokens"),
        "thoughts_tokens": usage.get("thoughts_tokens"),
        "cost_usd": usage.get("cost_usd"),
        "attempts": record.get("attempts") if failed else record.get("attempt"),
        "timings_ms": record.get("timings_ms") or None,
        "completed_at": _when(record.get("completed_at") or record.get("failed_at")),
        "record_uri": record_uri,
    }


def _object(found: dict[str, Any]) -> dict[str, Any]:
    return {
        "label": found.get("label"),
        "box": found.get("box"),
        "box_2d": found.get("box_2d"),
        "mask_uri": found.get("mask"),
        "mask_area": found.get("mask_area"),
    }


def _when(text: Any) -> datetime | None:
    if not isinstance(text, str):
        return None
    return datetime.fromisoformat(text.replace("Z", "+00:00"))
