"""A record becomes one typed row (worker/exports/rows.py), read back by DuckDB as written."""

from __future__ import annotations

import json
from pathlib import Path

import duckdb
import pyarrow as pa
import pyarrow.parquet as pq

from worker.exports.rows import SCHEMA, row_of

DETECT = {
    "schema_version": 1, "job_id": "j-1", "task": "detect", "status": "succeeded",
    "model": "gemini-2.5-flash", "mode": "interactive", "run": "run-1",
    "images": [{"uri": "s3://inbox/a.jpg", "sha256": "x", "mime_type": "image/jpeg",
                "width": 100, "height": 80, "transport": "inline"}],
    "output": {"objects": [
        {"label": "forklift", "box_2d": [10, 20, 30, 40], "box": [2, 1, 4, 2]},
        {"label": "pallet", "box_2d": [50, 60, 70, 80], "box": [6, 4, 8, 6]},
    ]},
    "usage": {"prompt_tokens": 300, "output_tokens": 40, "thoughts_tokens": 0,
              "cost_usd": 0.00019},
    "warnings": [], "attempt": 1, "timings_ms": {"fetch": 3.5},
    "completed_at": "2026-12-03T09:14:03.120Z",
}  # fmt: skip
FAILED = {
    "schema_version": 1, "job_id": "j-2", "task": "custom", "status": "failed",
    "error": {"code": "model_output_invalid", "message": "not JSON", "raw_text": "oops {"},
    "attempts": 3, "failed_at": "2026-12-03T09:15:00.000Z",
    "job": {"task": "custom", "images": ["s3://inbox/b.jpg"]},
}  # fmt: skip


def test_rows_are_typed_and_read_back_by_duckdb(tmp_path: Path) -> None:
    rows = [row_of(DETECT, "s3://r/j-1/result.json"), row_of(FAILED, "s3://r/j-2/error.json")]
    table = pa.Table.from_pylist(rows, schema=SCHEMA)
    path = tmp_path / "part.parquet"
    pq.write_table(table, path)
    assert pq.read_schema(path).metadata[b"gvw_export_schema_version"] == b"1"
    found = duckdb.sql(
        f"select job_id, object_count, error_code, raw_text, input_uris "
        f"from '{path}' order by job_id"
    ).fetchall()
    assert found == [
        ("j-1", 2, None, None, ["s3://inbox/a.jpg"]),
        ("j-2", None, "model_output_invalid", "oops {", ["s3://inbox/b.jpg"]),
    ]
    labels = duckdb.sql(
        f"select o.label from (select unnest(objects) as o from '{path}') order by 1"
    ).fetchall()
    assert labels == [("forklift",), ("pallet",)]
    assert json.loads(json.dumps(rows[0]["timings_ms"])) == {"fetch": 3.5}
