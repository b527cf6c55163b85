"""Outages are waits, not failures (docs/reliability.md, scenarios 21-24).

A dependency being down (Redis, S3, Gemini) is not the job's fault: jobs in flight wait,
without spending their retries, and end with their real result once it is back, within
bounded time; the outage costs a handful of log lines, not a traceback per poll.
"""

from __future__ import annotations

import time
import uuid
from pathlib import Path

import pytest

from tests.harness import (
    Stack,
    read_json,
    running_stack,
    start_redis,
    start_worker,
    wait_until,
)
from tests.reliability.conftest import FleetFactory, assert_invariant
from tests.reliability.tcp_gate import TcpGate
from worker.emulator.scenes import make_scene

pytestmark = pytest.mark.reliability

# A visibility timeout far longer than the test: a job that comes back only through
# kombu's visibility restore would be late, and the test says so.
LONG_VISIBILITY_ENV = {
    "GVW_VISIBILITY_TIMEOUT_S": "600",
    "GVW_SOFT_TIME_LIMIT_S": "50",
    "GVW_HARD_TIME_LIMIT_S": "60",
    "GVW_RETRY_BASE_S": "0.5",
    "GVW_RETRY_MAX_S": "8",
    "GVW_JOB_LOCK_TTL_S": "5",
    "GVW_MAX_DELIVERIES": "3",
    "GVW_SOFT_SHUTDOWN_TIMEOUT_S": "1",
    # as deployed by default: no Celery result backend (results live in storage)
    "CELERY_RESULT_BACKEND": "",
}


def put_scenes(stack: Stack, count: int) -> list[str]:
    uris = []
    for index in range(count):
        scene = make_scene(640, 480, shapes=["red circle", "blue rectangle"], seed=index)
        uris.append(stack.put(f"outage/{uuid.uuid4().hex}.png", scene.png_bytes()))
    return uris


def records_of(stack: Stack, job_ids: list[str]) -> dict[str, dict[str, object]]:
    found = {}
    for job_id in job_ids:
        for name in ("result.json", "error.json"):
            record = read_json(stack.s3, "results", f"vision/{job_id}/{name}")
            if record is not None:
                found[job_id] = record
                break
    return found


@pytest.mark.parametrize("pool", ["threads", "prefork"])
def test_a_redis_restart_ends_every_job_in_flight_within_a_minute_of_its_return(
    tmp_path: Path, pool: str
) -> None:
    with running_stack(
        tmp_path,
        workers=2,
        concurrency=3,
        pool=pool,
        extra_env=LONG_VISIBILITY_ENV,
        redis_appendonly=True,
    ) as stack:
        stack.emulator.configure(latency_ms=1500)
        uris = put_scenes(stack, 4)
        job_ids = [
            stack.submit({"task": "segment", "images": [uris[i % 4]], "prompt": "the shapes"})
            for i in range(30)
        ]
        broker = stack.redis.client(db=0)
        wait_until(
            lambda: stack.model_calls() >= 4 and broker.llen("vision") >= 6,
            timeout_s=60,
            what="jobs running on both workers with more queued",
        )
        lines_before = [len(worker.log().splitlines()) for worker in stack.workers]
        stack.redis.restart(down_s=6)  # SIGKILL, 6 s down, back with its AOF
        back_at = time.monotonic()
        outage_log = [
            line
            for worker, before in zip(stack.workers, lines_before, strict=True)
            for line in worker.log().splitlines()[before:]
        ]

        wait_until(
            lambda: len(records_of(stack, job_ids)) == len(job_ids),
            timeout_s=60,
            what="every job's record within 60 s of Redis's return",
            interval_s=0.5,  # each look reads up to 60 objects
        )
        took_s = time.monotonic() - back_at
        records = assert_invariant(stack, job_ids, timeout_s=5)
        assert [r["status"] for r in records] == ["succeeded"] * len(job_ids), [
            (r["job_id"], r.get("error")) for r in records if r["status"] != "succeeded"
        ]
        # a job asked again is one that was in flight when Redis went away
        assert stack.model_calls() <= len(job_ids) + 2 * 3
        assert all(worker.proc.poll() is None for worker in stack.workers)
        # an outage is a few lines, not a traceback per poll
        print("the outage's lines:", *outage_log, sep="\n")  # shown when the test fails
        assert len(outage_log) <= 25, (len(outage_log), took_s)


def test_an_s3_outage_longer_than_the_retry_budget_is_waited_out_one_call_a_job(
    fleet: FleetFactory, tmp_path: Path
) -> None:
    # retries that would be spent in ~2 s: the outage lasts 30 s, 15x that
    short_retries = {"GVW_MAX_RETRIES": "2", "GVW_RETRY_BASE_S": "0.5", "GVW_RETRY_MAX_S": "8"}
    with fleet(workers=0, extra_env=short_retries) as stack, TcpGate(stack.moto.port) as gate:
        env = {**stack.env, "AWS_ENDPOINT_URL_S3": gate.url}
        stack.workers.append(start_worker(env, tmp_path, name="w1", concurrency=4))
        stack.emulator.configure(latency_ms=1000)
        uris = put_scenes(stack, 4)
        job_ids = [stack.submit({"task": "caption", "images": [uri]}) for uri in uris[:2]]
        # two jobs whose model call is under way when S3 goes: they cannot publish
        wait_until(lambda: stack.model_calls() >= 1, timeout_s=30, what="a model call")
        gate.cut()
        cut_at = time.monotonic()
        # two more that cannot even read their image, and one that failed for good and
        # cannot write its error record
        job_ids += [stack.submit({"task": "caption", "images": [uri]}) for uri in uris[2:]]
        bad = stack.submit({"task": "classify", "images": [uris[0]]})  # no labels
        time.sleep(30)  # an outage, not a condition: S3 is unreachable this long
        gate.mend()
        mended_at = time.monotonic()

        records = assert_invariant(stack, [*job_ids, bad], timeout_s=60)
        assert [r["status"] for r in records[:-1]] == ["succeeded"] * len(job_ids), records
        assert records[-1]["error"]["code"] == "invalid_job", records[-1]
        assert time.monotonic() - mended_at < 60
        assert mended_at - cut_at >= 30
        # nothing was paid twice: one call for each job that succeeded
        assert stack.model_calls() == len(job_ids)


def test_a_gemini_503_storm_is_waited_out_not_recorded_as_model_error(
    fleet: FleetFactory,
) -> None:
    short_retries = {"GVW_MAX_RETRIES": "2", "GVW_RETRY_BASE_S": "0.5", "GVW_RETRY_MAX_S": "4"}
    with fleet(workers=1, concurrency=3, extra_env=short_retries) as stack:
        stack.emulator.queue_fault("503", count=100_000)  # every call, until cleared
        job_ids = [
            stack.submit({"task": "caption", "images": [uri]}) for uri in put_scenes(stack, 3)
        ]
        wait_until(
            lambda: stack.emulator.stats()["generate_calls_by_outcome"].get("503", 0) >= 9,
            timeout_s=30,
            what="every job refused three times: more than its retries",
        )
        time.sleep(15)  # the storm goes on: a duration, not a condition
        stack.emulator.service.faults.clear()
        records = assert_invariant(stack, job_ids, timeout_s=60)
        assert [r["status"] for r in records] == ["succeeded"] * len(job_ids), records


def test_the_fleet_redis_going_away_mid_job_is_a_wait_not_an_internal_error(
    fleet: FleetFactory, tmp_path: Path
) -> None:
    # the broker stays up; only GVW_REDIS_URL (locks, claims, answers) goes away
    fleet_dir = tmp_path / "fleet-redis"
    fleet_dir.mkdir()
    fleet_redis = start_redis(fleet_dir)
    try:
        with (
            fleet(workers=0, extra_env={"GVW_MAX_RETRIES": "1"}) as stack,
            TcpGate(fleet_redis.port) as gate,
        ):
            env = {**stack.env, "GVW_REDIS_URL": f"redis://127.0.0.1:{gate.port}/1"}
            worker = start_worker(env, tmp_path, name="w1", concurrency=2)
            stack.workers.append(worker)
            stack.emulator.configure(latency_ms=1500)
            job_ids = [
                stack.submit({"task": "caption", "images": [uri]}) for uri in put_scenes(stack, 2)
            ]
            wait_until(
                lambda: fleet_redis.client(db=1).exists(*(f"gvw:claim:{j}" for j in job_ids)) == 2,
                timeout_s=30,
                what="both jobs claimed (running)",
            )
            gate.cut()  # mid-job: the lock's heartbeat, the paid answer, the commit's checks
            time.sleep(8)  # the outage: a duration, not a condition
            gate.mend()
            records = assert_invariant(stack, job_ids, timeout_s=60)
            assert [r["status"] for r in records] == ["succeeded"] * 2, records
            log = worker.log()
            assert "unexpected error" not in log
            assert "the fleet's Redis (GVW_REDIS_URL) is down" in log
    finally:
        fleet_redis.stop()
