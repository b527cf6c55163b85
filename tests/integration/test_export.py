"""`gvw export` (issue 21, first part): a run's records as a Parquet dataset on S3, read
back with DuckDB and compared job by job with the records; a second export adds nothing,
and one after more jobs adds only those."""

from __future__ import annotations

import io
import json
import uuid
from typing import Any

import duckdb
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from tests.harness import Stack
from tests.integration.test_cli import gvw
from tests.integration.test_runs import first_line_run, read_json
from worker.emulator.scenes import make_scene

pytestmark = pytest.mark.integration


def dataset(stack: Stack, folder_key: str) -> pa.Table:
    """Every part of a dataset on S3, as DuckDB reads it (from the parts' bytes)."""
    listed = stack.s3.list_objects_v2(Bucket="results", Prefix=folder_key)
    tables = []
    for item in listed.get("Contents", []):
        body = stack.s3.get_object(Bucket="results", Key=item["Key"])["Body"].read()
        tables.append(pq.read_table(io.BytesIO(body)))
    return pa.concat_tables(tables)


def test_a_run_exports_to_parquet_that_duckdb_reads_job_by_job(stack: Stack) -> None:
    prefix = f"export-{uuid.uuid4().hex[:8]}"
    for index in range(6):
        scene = make_scene(160, 120, shapes=["red circle", "blue rectangle"], seed=index)
        stack.put(f"{prefix}/{index}.png", scene.png_bytes())
    stack.put(f"{prefix}/broken.png", b"\x89PNG\r\n\x1a\n and then nothing")
    done = gvw(
        "enqueue-prefix", f"s3://inbox/{prefix}/", "--task", "detect", "--prompt", "shapes",
        "--wait", env=stack.env, timeout_s=180,
    )  # fmt: skip
    run_id = first_line_run(done.stdout)

    first = gvw("export", run_id, "--json", env=stack.env)
    assert first.returncode == 0, first.stderr
    summary = json.loads(first.stdout)
    assert summary["added"] == 7 and summary["parts_written"] == 1
    assert summary["dataset"] == f"s3://results/vision/_exports/{run_id}"

    exported = dataset(stack, f"vision/_exports/{run_id}/")
    rows = duckdb.sql(
        "select job_id, status, object_count, error_code, cost_usd, record_uri, "
        "list_transform(objects, lambda o: o.label) as labels from exported order by job_id"
    ).fetchall()
    assert len(rows) == 7
    for job_id, status, count, code, cost, uri, labels in rows:
        record = read_json(stack, uri)
        assert record["job_id"] == job_id and record["status"] == status
        if status == "succeeded":
            objects = record["output"]["objects"]
            assert count == len(objects) and labels == [o["label"] for o in objects]
            assert cost == record["usage"]["cost_usd"] and code is None
        else:
            assert code == record["error"]["code"] == "invalid_image" and count is None
    assert exported.schema.metadata[b"gvw_export_schema_version"] == b"1"

    again = json.loads(gvw("export", run_id, "--json", env=stack.env).stdout)
    assert (again["added"], again["already_there"], again["parts_written"]) == (0, 7, 0)


def test_an_export_of_a_results_folder_adds_only_new_records(stack: Stack) -> None:
    folder = f"s3://results/folder-{uuid.uuid4().hex[:8]}"
    prefix = f"exfolder-{uuid.uuid4().hex[:8]}"
    for index in range(2):
        stack.put(f"{prefix}/a{index}.png", make_scene(64, 48, shapes=[], seed=index).png_bytes())
    base = ["enqueue-prefix", f"s3://inbox/{prefix}/", "--task", "caption", "--output", folder]
    gvw(*base, "--wait", env=stack.env, timeout_s=120)
    to = f"s3://results/datasets/{uuid.uuid4().hex[:8]}"
    first: dict[str, Any] = json.loads(
        gvw("export", folder, "--to", to, "--json", env=stack.env).stdout
    )
    stack.put(f"{prefix}/b.png", make_scene(64, 48, shapes=[], seed=9).png_bytes())
    gvw(*base, "--wait", env=stack.env, timeout_s=120)
    second = json.loads(gvw("export", folder, "--to", to, "--json", env=stack.env).stdout)
    assert first["added"] == 2 and second["added"] == 1 and second["already_there"] == 2
    table = dataset(stack, to.removeprefix("s3://results/") + "/")
    assert table.num_rows == 3 and len(set(table.column("job_id").to_pylist())) == 3


def test_gvw_show_prints_a_job_and_downloads_its_overlay(stack: Stack, tmp_path: Any) -> None:
    scene = make_scene(200, 150, shapes=["red circle", "blue rectangle"], seed=3)
    uri = stack.put(f"show/{uuid.uuid4().hex}.png", scene.png_bytes())
    job_id = stack.submit({"task": "detect", "images": [uri], "prompt": "the shapes"})
    record = stack.record(job_id)
    env = {k: v for k, v in stack.env.items() if k not in ("DISPLAY", "WAYLAND_DISPLAY")}
    shown = gvw("show", job_id, "--open", env=env, cwd=tmp_path)
    assert shown.returncode == 0, shown.stderr
    assert f"{job_id}: succeeded (detect" in shown.stdout
    assert f"{len(record['output']['objects'])} objects:" in shown.stdout
    overlay_uri = record["artifacts"]["overlay"]
    path = tmp_path / "gvw-show" / job_id / overlay_uri.rsplit("/", 1)[-1]
    assert f"overlay: gvw-show/{job_id}/" in shown.stdout and "no display" in shown.stdout
    stored = stack.s3.get_object(Bucket="results", Key=overlay_uri.removeprefix("s3://results/"))[
        "Body"
    ].read()
    assert path.read_bytes() == stored
