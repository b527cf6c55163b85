"""Failure scenarios of docs/reliability.md: real processes on loopback, short timeouts.

Each test starts its own stack (redis-server on a free port, the Gemini emulator, `celery
worker` subprocesses in their own process groups, and moto's S3 server, emptied: one per
test process, see `SharedMoto`) through `fleet()`, breaks something, and ends with
`assert_invariant`: every submitted job has exactly one result.json or one error.json, and a
result references only existing artifacts of its own attempt.
"""

from __future__ import annotations

import contextlib
import os
import signal
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

import pytest

from tests.harness import (
    SharedMoto,
    Stack,
    list_job_keys,
    read_json,
    running_stack,
    wait_until,
)

pytestmark = pytest.mark.reliability

# Short enough that a lost message comes back within a test, long enough to exceed the
# hard time limit plus the longest retry countdown (Settings refuses anything else).
FAST_ENV: dict[str, str] = {
    "GVW_VISIBILITY_TIMEOUT_S": "20",
    "GVW_SOFT_TIME_LIMIT_S": "8",
    "GVW_HARD_TIME_LIMIT_S": "10",
    "GVW_RETRY_BASE_S": "0.5",
    "GVW_RETRY_MAX_S": "4",
    "GVW_JOB_LOCK_TTL_S": "3",
    "GVW_MAX_DELIVERIES": "3",
    "GVW_SOFT_SHUTDOWN_TIMEOUT_S": "1",
}

FleetFactory = Callable[..., contextlib.AbstractContextManager[Stack]]


@pytest.fixture(scope="session")
def shared_moto() -> Iterator[SharedMoto]:
    """This test process's moto server, emptied for each stack that takes it. No test
    stops, blocks or restarts moto itself (outages are staged in a `TcpGate` or an
    `S3Proxy` in front of it), so it can outlive a test."""
    shared = SharedMoto()
    try:
        yield shared
    finally:
        shared.stop()


@pytest.fixture
def fleet(tmp_path: Path, shared_moto: SharedMoto, request: pytest.FixtureRequest) -> FleetFactory:
    """`with fleet(workers=2, pool="prefork", extra_env={...}) as stack:`"""
    # a wallclock test's moto is its own, started with its CPU priority (tests/conftest.py)
    moto = None if request.node.get_closest_marker("wallclock") else shared_moto

    @contextlib.contextmanager
    def start(
        *,
        workers: int = 1,
        concurrency: int = 2,
        pool: str = "threads",
        extra_env: Mapping[str, str] | None = None,
        redis_appendonly: bool = False,
    ) -> Iterator[Stack]:
        env = {**FAST_ENV, **(extra_env or {})}
        with running_stack(
            tmp_path,
            workers=workers,
            concurrency=concurrency,
            extra_env=env,
            pool=pool,
            redis_appendonly=redis_appendonly,
            shared_moto=moto,
        ) as stack:
            yield stack

    return start


def assert_invariant(
    stack: Stack, job_ids: list[str], *, timeout_s: float = 90
) -> list[dict[str, Any]]:
    """Wait for every job's record, then check exactly-one-record and artifact ownership."""
    records = [stack.record(job_id, timeout_s=timeout_s) for job_id in job_ids]
    for job_id, record in zip(job_ids, records, strict=True):
        keys = set(list_job_keys(stack.s3, job_id))
        prefix = f"vision/{job_id}/"
        finals = {k for k in keys if k in (prefix + "result.json", prefix + "error.json")}
        assert len(finals) == 1, (job_id, sorted(keys))
        if record["status"] != "succeeded":
            continue
        own = f"s3://results/{prefix}attempts/{record['attempt_id']}/"
        referenced = list(record.get("artifacts", {}).values())
        referenced += [o["mask"] for o in record["output"].get("objects", []) if o.get("mask")]
        for uri in referenced:
            assert uri.startswith(own), (job_id, uri, own)
            assert uri.removeprefix("s3://results/") in keys, (job_id, uri)
    return records


def result_of(stack: Stack, job_id: str) -> dict[str, Any] | None:
    return read_json(stack.s3, "results", f"vision/{job_id}/result.json")


def pool_children(worker_pid: int) -> list[int]:
    """PIDs of a prefork worker's pool processes (children of its main process)."""
    children = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        with contextlib.suppress(OSError):
            stat = Path(f"/proc/{entry}/stat").read_text()
            ppid = int(stat.rsplit(")", 1)[1].split()[1])
            if ppid == worker_pid:
                children.append(int(entry))
    return children


def kill_pid(pid: int, sig: int = signal.SIGKILL) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, sig)


__all__ = [
    "FAST_ENV",
    "FleetFactory",
    "assert_invariant",
    "kill_pid",
    "pool_children",
    "result_of",
    "wait_until",
]
