"""Cost at scale, on the real fleet: an answer paid once across jobs and workers.

Real `celery worker` processes, redis-server, moto's S3 server and the emulator; the
emulator counts the model calls the fleet paid for.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
from typing import Any

import pytest

from tests.harness import Stack, read_json, wait_until
from tests.reliability.conftest import FleetFactory, assert_invariant, result_of
from worker.emulator.scenes import make_scene

CACHE_ENV = {"GVW_ANSWER_CACHE_TTL_S": "3600"}


def put_scene(stack: Stack, seed: int) -> str:
    scene = make_scene(320, 240, shapes=["red circle", "blue rectangle"], seed=seed)
    return stack.put(f"cost/{uuid.uuid4().hex}.png", scene.png_bytes())


def test_a_burst_of_identical_requests_is_paid_once_across_workers(
    fleet: FleetFactory,
) -> None:
    with fleet(workers=2, concurrency=2, extra_env=CACHE_ENV) as stack:
        # calls take a while, as in production: duplicates arrive while the first is asked
        stack.emulator.configure(latency_ms=300)
        distinct = 4
        # each request three times, under three object keys (the same bytes)
        uris = [[put_scene(stack, seed) for _ in range(3)] for seed in range(distinct)]
        job_ids = [
            stack.submit({"task": "detect", "prompt": "the shapes", "images": [uri]})
            for copies in zip(*uris, strict=True)
            for uri in copies
        ]
        records = assert_invariant(stack, job_ids)
        calls = stack.model_calls()

    assert all(r["status"] == "succeeded" for r in records), records
    assert calls == distinct
    payers = {r["job_id"] for r in records if r["answer_reused_from"] is None}
    reusers = [r for r in records if r["answer_reused_from"] is not None]
    assert len(payers) == distinct and len(reusers) == len(job_ids) - distinct
    for record in reusers:
        assert record["answer_reused_from"]["job_id"] in payers
        assert record["usage"]["total_tokens"] == 0 and record["usage"]["cost_usd"] == 0
        assert record["images"][0]["transport"] == "none"
        assert record["output"]["objects"], record  # the answer, read for this job


def test_a_job_that_asks_fresh_pays_and_the_next_reuses_its_answer(fleet: FleetFactory) -> None:
    with fleet(workers=1, concurrency=2, extra_env=CACHE_ENV) as stack:
        uri = put_scene(stack, seed=7)
        job = {"task": "caption", "images": [uri]}
        first = stack.submit(dict(job))
        assert_invariant(stack, [first])
        fresh = stack.submit({**job, "options": {"fresh": True}})
        assert_invariant(stack, [fresh])
        after = stack.submit(dict(job))
        (record,) = assert_invariant(stack, [after])
        calls = stack.model_calls()

    assert calls == 2
    assert record["answer_reused_from"]["job_id"] == fresh


# --- the day's budget ----------------------------------------------------------------------

# caption with no thinking and at most 100 output tokens: estimated at about $0.0003 a
# call (gemini-2.5-flash), answered by the emulator for about half that
BUDGET_JOB_OPTIONS = {"thinking_budget": 0, "max_output_tokens": 100}
BUDGET_USD = 0.003


def budget_day(stack: Stack) -> tuple[str, float, float]:
    """The day's key, spent and reserved, in USD ("", 0, 0 before the first call)."""
    client = stack.redis.client(db=1)
    keys = list(client.scan_iter(match="gvw:budget:*"))
    if not keys:
        return "", 0.0, 0.0
    (key,) = keys
    values = {k.decode(): int(v) for k, v in client.hgetall(key).items()}
    return key.decode(), values.get("spent", 0) / 1e6, values.get("reserved", 0) / 1e6


def waits_counted(stack: Stack) -> int:
    """Times jobs went back to the queue to wait (worker.fleet.deliveries)."""
    client = stack.redis.client(db=1)
    return sum(int(client.get(key) or 0) for key in client.scan_iter(match="gvw:deliveries:*:-1"))


def gvw_costs(stack: Stack) -> dict[str, Any]:
    done = subprocess.run(
        [sys.executable, "-m", "worker.cli", "costs", "--json"],
        env={**os.environ, **stack.env},
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
        stdin=subprocess.DEVNULL,
    )
    return dict(json.loads(done.stdout))


def error_of(stack: Stack, job_id: str) -> dict[str, object] | None:
    return read_json(stack.s3, "results", f"vision/{job_id}/error.json")


def test_the_fleet_never_spends_past_the_days_budget_and_loses_no_job(
    fleet: FleetFactory,
) -> None:
    env = {
        "GVW_BUDGET_USD_PER_DAY": str(BUDGET_USD),
        "GVW_RATE_LIMIT_MAX_WAIT_S": "0.5",
        # a job that waited for the budget still has its one retry for a real failure
        "GVW_MAX_RETRIES": "1",
    }
    with fleet(workers=2, concurrency=2, extra_env=env) as stack:
        job = {"task": "caption", "options": BUDGET_JOB_OPTIONS}
        job_ids = [stack.submit({**job, "images": [put_scene(stack, seed)]}) for seed in range(30)]
        spent_per_day: list[float] = []
        for day in range(6):
            committed = wait_for_a_full_day(stack, job_ids)
            key, spent, _ = budget_day(stack)
            spent_per_day.append(spent)
            # nobody failed: the jobs the day had no room for wait, none is in error.json
            assert not [j for j in job_ids if error_of(stack, j) is not None]
            if len(committed) == len(job_ids):
                break
            if day == 0:
                # what an operator sees: the day's spending against the budget
                shown = gvw_costs(stack)
                assert shown["budget_usd_per_day"] == BUDGET_USD
                assert shown["spent_usd"] == pytest.approx(spent, abs=1e-6)
                # one call of the next day fails: retried, although each job waited often
                stack.emulator.queue_fault("503", count=1)
            stack.redis.client(db=1).delete(key)  # the next day opens
        records = assert_invariant(stack, job_ids)
        calls = stack.model_calls()

    assert all(r["status"] == "succeeded" for r in records)
    assert len(spent_per_day) >= 2  # the budget held jobs back at least once
    assert max(spent_per_day) <= BUDGET_USD, spent_per_day
    assert calls == len(job_ids) + 1  # each job paid once, plus the call that failed


def wait_for_a_full_day(stack: Stack, job_ids: list[str]) -> list[str]:
    """Wait until every job is committed, or the day has no room left: nothing in
    flight, every call committed, and every waiting job refused twice since the last
    commit. Returns the committed jobs."""
    state = {"committed": -1, "waits": 0}
    done: list[str] = []

    def full() -> bool:
        done[:] = [j for j in job_ids if result_of(stack, j) is not None]
        waits = waits_counted(stack)
        if len(done) != state["committed"]:
            state.update(committed=len(done), waits=waits)
            return False
        if len(done) == len(job_ids):
            return True
        settled = budget_day(stack)[2] == 0 and stack.model_calls() >= len(done)
        return settled and waits - state["waits"] >= 2 * (len(job_ids) - len(done))

    wait_until(full, timeout_s=90, what="the day's budget to be spent", interval_s=0.5)
    return list(done)
