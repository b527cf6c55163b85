"""Scenarios 1-3 of docs/reliability.md: duplicates and killed workers."""

from __future__ import annotations

import time
import uuid

from tests.harness import start_worker
from tests.reliability.conftest import (
    FleetFactory,
    assert_invariant,
    kill_pid,
    pool_children,
    wait_until,
)
from worker.emulator.scenes import make_scene


def test_same_job_three_times_gives_one_result_and_one_model_call(fleet: FleetFactory) -> None:
    with fleet(workers=2, concurrency=2) as stack:
        stack.emulator.configure(latency_ms=500)
        uri = stack.put(f"r/{uuid.uuid4().hex}.png", make_scene(400, 300, shapes=2).png_bytes())
        job = {"job_id": f"dup-{uuid.uuid4().hex[:8]}", "task": "detect", "images": [uri]}
        for _ in range(3):
            stack.submit(dict(job))
        records = assert_invariant(stack, [job["job_id"]])
        assert records[0]["status"] == "succeeded"
        stack.wait_until_settled()  # the duplicates came back (JobBusy) and found the result
        assert stack.model_calls() == 1


def test_sigkill_of_a_pool_child_mid_task_reruns_within_seconds(fleet: FleetFactory) -> None:
    with fleet(workers=1, concurrency=1, pool="prefork") as stack:
        stack.emulator.configure(latency_ms=3000)
        uri = stack.put(f"r/{uuid.uuid4().hex}.png", make_scene(400, 300, shapes=2).png_bytes())
        job_id = stack.submit({"task": "caption", "images": [uri]})
        wait_until(
            lambda: stack.emulator.stats()["generate_calls"] >= 1,
            timeout_s=30,
            what="the model call to start",
        )
        children = pool_children(stack.worker.proc.pid)
        assert children
        killed_at = time.monotonic()
        for pid in children:
            kill_pid(pid)
        stack.emulator.configure(latency_ms=0)
        records = assert_invariant(stack, [job_id], timeout_s=60)
        assert records[0]["status"] == "succeeded"
        assert time.monotonic() - killed_at < 15  # within seconds, not the visibility timeout


def test_sigkill_of_a_whole_worker_is_finished_by_another(fleet: FleetFactory, tmp_path) -> None:
    with fleet(workers=1, concurrency=2) as stack:
        stack.emulator.configure(latency_ms=3000)
        uri = stack.put(f"r/{uuid.uuid4().hex}.png", make_scene(400, 300, shapes=2).png_bytes())
        job_id = stack.submit({"task": "caption", "images": [uri]})
        wait_until(
            lambda: stack.emulator.stats()["generate_calls"] >= 1,
            timeout_s=30,
            what="the model call to start",
        )
        stack.worker.kill()
        stack.emulator.configure(latency_ms=0)
        killed_at = time.monotonic()
        survivor = start_worker(stack.env, tmp_path, name="survivor", concurrency=2)
        stack.workers.append(survivor)
        records = assert_invariant(stack, [job_id], timeout_s=90)
        assert records[0]["status"] == "succeeded"
        # back within the visibility timeout (20 s) plus kombu's restore interval and margin
        assert time.monotonic() - killed_at < 20 + 10 + 15
