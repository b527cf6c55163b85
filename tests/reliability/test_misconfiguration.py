"""A worker whose own deployment is wrong says so at once, instead of retrying for minutes."""

from __future__ import annotations

import json
import uuid
from pathlib import Path

from tests.harness import start_worker, wait_until
from tests.reliability.conftest import FleetFactory
from worker.emulator.scenes import make_scene


def test_missing_aws_credentials_fail_at_once_as_worker_misconfigured(
    fleet: FleetFactory, tmp_path: Path
) -> None:
    with fleet(workers=0) as stack:
        uri = stack.put(f"c/{uuid.uuid4().hex}.png", make_scene(64, 48, shapes=1).png_bytes())
        env = {
            k: v
            for k, v in stack.env.items()
            if k not in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN")
        }
        # nowhere else to find credentials either: no files, no instance metadata
        env.update(
            {
                "AWS_SHARED_CREDENTIALS_FILE": str(tmp_path / "none"),
                "AWS_CONFIG_FILE": str(tmp_path / "none"),
                "AWS_EC2_METADATA_DISABLED": "true",
                # the error record must land somewhere the worker can write
                "GVW_RESULTS_URI": f"file://{tmp_path}/results",
            }
        )
        stack.workers.append(start_worker(env, tmp_path, name="nocreds", concurrency=1))
        job_id = stack.submit({"task": "caption", "images": [uri]})
        record_path = tmp_path / "results" / job_id / "error.json"
        wait_until(record_path.exists, timeout_s=30, what="the error record")
        record = json.loads(record_path.read_text())
        log = stack.workers[0].log()
    assert record["error"]["code"] == "worker_misconfigured"
    assert "AWS_ACCESS_KEY_ID" in record["error"]["message"]
    assert record["attempts"] == 1  # no retries: none would bring credentials
    assert "retrying job" not in log
