"""The `vision.analyze` task's own decisions (retry, wait, record), in process: the real
task applied eagerly over local adapters and the in-process emulator."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from celery.exceptions import Retry

from tasks.errors import FleetUnavailable
from tests.integration.test_pipeline_local import local_ports, put, record_of
from worker import runtime
from worker.contract.records import ErrorRecord
from worker.emulator.server import EmulatorServer
from worker.fleet.job_claims import Claim
from worker.queue.app import FINAL_ERROR_HEADER, OUTAGE_SINCE_HEADER, analyze

pytestmark = pytest.mark.inprocess  # the fast tier (tests/conftest.py)


@pytest.fixture
def emulator() -> Iterator[EmulatorServer]:
    with EmulatorServer(api_key="k") as server:
        yield server


class FlakyClaims:
    """A claims adapter whose Redis goes away after ``working`` claims."""

    def __init__(self, inner: Any, *, working: int) -> None:
        self._inner = inner
        self.working = working

    def claim(self, job_id: str, fingerprint: str, folder: str) -> Claim:
        if self.working <= 0:
            raise FleetUnavailable("the fleet's Redis (GVW_REDIS_URL) does not answer")
        self.working -= 1
        return self._inner.claim(job_id, fingerprint, folder)  # type: ignore[no-any-return]


def test_a_final_failure_waits_for_redis_to_be_recorded_and_never_runs_again(
    emulator: EmulatorServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "in").mkdir()
    ports = local_ports(emulator, tmp_path, gvw_outage_max_wait_s=5)
    claims = FlakyClaims(ports.claims, working=1)  # the run's claim; not the record's
    ports.claims = claims  # type: ignore[assignment]
    monkeypatch.setattr(runtime, "_ports", ports)
    monkeypatch.setattr(runtime, "_installed", True)
    job = {"job_id": "late-record", "task": "caption", "images": [put(tmp_path, "a.png", b"%PDF")]}
    # a job that has waited past GVW_OUTAGE_MAX_WAIT_S already, and fails for good now,
    # while the fleet's Redis is away: its record cannot be written yet
    waited = {OUTAGE_SINCE_HEADER: time.time() - 60}
    with pytest.raises(Retry):  # it waits for Redis: no recursion, no lost job
        analyze.apply(args=[job], task_id="late-record", headers=waited, throw=True)
    carried = _retried_headers(monkeypatch, ports, job, waited)
    assert carried[FINAL_ERROR_HEADER]["code"] == "invalid_image"

    claims.working = 10  # Redis is back
    before = int(emulator.stats()["generate_calls"])
    analyze.apply(args=[job], task_id="late-record", headers=carried, throw=True)
    record = record_of(tmp_path, "late-record")
    assert isinstance(record, ErrorRecord) and record.error.code == "invalid_image"
    assert int(emulator.stats()["generate_calls"]) == before  # recorded, not run again


def _retried_headers(
    monkeypatch: pytest.MonkeyPatch, ports: Any, job: dict[str, Any], headers: dict[str, Any]
) -> dict[str, Any]:
    """The headers the task's retry would be sent with."""
    seen: dict[str, Any] = {}
    original = analyze.retry

    def capture(*args: Any, **kwargs: Any) -> Any:
        seen.update(kwargs.get("headers") or {})
        return original(*args, **kwargs)

    monkeypatch.setattr(analyze, "retry", capture)
    ports.claims.working = 1
    with pytest.raises(Retry):
        analyze.apply(args=[job], task_id=job["job_id"], headers=headers, throw=True)
    return seen
