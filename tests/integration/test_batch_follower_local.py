"""The batch follower's decisions, fast: the real pipeline and `BatchRunner` on local
adapters and the in-process emulator (its Batch API), no Celery, no Redis.

What goes wrong with one batch stays with that batch: its jobs go again or are re-asked,
and the fleet's other batches go on.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tasks.retry_policy import RetryPolicy
from tests.integration.test_pipeline_local import local_ports, put, record_of, scene_png
from worker.batch.follower import BatchRunner
from worker.contract.jobs import parse_job
from worker.contract.records import ResultRecord
from worker.emulator.server import EmulatorServer
from worker.pipeline.flow import run
from worker.pipeline.ports import Ports

pytestmark = pytest.mark.inprocess  # the fast tier (tests/conftest.py)

POLICY = RetryPolicy(base_s=0.1, max_s=1, max_retries=3, output_retries=2)


@pytest.fixture
def emulator() -> Iterator[EmulatorServer]:
    with EmulatorServer(api_key="k") as server:
        server.configure(batch_done_after_s=0)
        yield server


@pytest.fixture
def root(tmp_path: Path) -> Path:
    (tmp_path / "in").mkdir()
    return tmp_path


class Fleet:
    """Jobs in batch mode, the follower, and the queue it sends jobs back to."""

    def __init__(self, emulator: EmulatorServer, root: Path, **settings: Any) -> None:
        self.root = root
        self.ports: Ports = local_ports(emulator, root, gvw_batch_max_wait_s=0, **settings)
        assert self.ports.batches is not None
        self.queue: list[dict[str, Any]] = []
        self.runner = BatchRunner(
            self.ports, self.ports.batches, lambda job, _n: self.queue.append(job), POLICY
        )

    def submit(self, job_id: str, *, model: str | None = None, seed: int = 1) -> None:
        uri = put(self.root, f"{job_id}.png", scene_png(seed))
        job: dict[str, Any] = {"job_id": job_id, "task": "caption", "images": [uri]}
        if model is not None:
            job["model"] = model
        outcome = run(parse_job({**job, "options": {"mode": "batch"}}), self.ports)
        assert outcome.status == "batched"

    def follow(self, runs: int = 1) -> None:
        for _ in range(runs):
            self.runner.run_once()

    def work_the_queue(self) -> None:
        """What the workers do with the jobs the follower sent back."""
        while self.queue:
            run(parse_job(self.queue.pop(0)), self.ports)


def interactive_calls(emulator: EmulatorServer) -> int:
    return int(emulator.stats()["generate_calls"])


def test_a_malformed_line_of_a_result_file_is_that_jobs_problem_alone(
    emulator: EmulatorServer, root: Path
) -> None:
    # a file batch (no inline bytes allowed) whose result file has one line cut mid-way
    fleet = Fleet(emulator, root, gvw_batch_inline_max_bytes=0)
    emulator.queue_fault("batch_bad_line", count=1)
    for index in range(3):
        fleet.submit(f"line-{index}", seed=index)
    fleet.follow(runs=2)  # submit, then deliver what can be read
    delivered = sorted(job["job_id"] for job in fleet.queue)
    assert len(delivered) == 2, delivered  # the two good lines

    # a job of another model waits meanwhile: it still gets its batch
    fleet.submit("elsewhere", model="gemini-2.5-flash-lite", seed=7)
    fleet.follow(runs=4)  # the unreadable answer is asked again in a next batch
    fleet.work_the_queue()
    for job_id in ("line-0", "line-1", "line-2", "elsewhere"):
        record = record_of(root, job_id)
        assert isinstance(record, ResultRecord), record
        assert record.mode == "batch"
    assert interactive_calls(emulator) == 0


def test_a_batch_whose_result_file_is_gone_sends_its_jobs_back(
    emulator: EmulatorServer, root: Path
) -> None:
    fleet = Fleet(emulator, root, gvw_batch_inline_max_bytes=0)
    for index in range(2):
        fleet.submit(f"gone-{index}", seed=index)
    fleet.follow()  # submitted
    assert fleet.ports.batches is not None
    (record,) = list(fleet.ports.batches.all_batches())
    assert record.name
    fleet.ports.gemini.get_batch(record.name)  # done at Gemini, its result file written
    # the fleet was down longer than the file lives (48 h): Gemini answers 403 for it
    emulator.service.files.expire(None)
    fleet.follow()
    assert sorted(job["job_id"] for job in fleet.queue) == ["gone-0", "gone-1"]
    closed = fleet.ports.batches.batch(record.batch_id)
    assert closed is not None and closed.state == "returned"
    fleet.follow(runs=3)  # nothing is tried again, nothing is left open
    assert not fleet.ports.batches.open_batches()


def test_an_inline_batch_too_large_for_gemini_goes_as_a_file_at_the_batch_price(
    emulator: EmulatorServer, root: Path
) -> None:
    emulator.configure(batch_inline_max_bytes=300)  # smaller than any request
    fleet = Fleet(emulator, root)
    for index in range(2):
        fleet.submit(f"big-{index}", seed=index)
    fleet.follow(runs=3)
    assert fleet.ports.batches is not None
    (record,) = list(fleet.ports.batches.all_batches())
    assert record.source == "file"
    fleet.work_the_queue()
    for index in range(2):
        result = record_of(root, f"big-{index}")
        assert isinstance(result, ResultRecord) and result.mode == "batch", result
    assert interactive_calls(emulator) == 0  # never the interactive path, at full price
