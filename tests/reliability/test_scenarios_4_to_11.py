"""Scenarios 4-11 of docs/reliability.md: kills around the commit, long runs, shutdowns, crash
loops, time limits, a Redis restart, and Gemini's two kinds of 429.

Real processes on loopback (see conftest.py). Where a worker must be stopped at an exact
point, its S3 traffic goes through a `TcpGate` (tcp_gate.py) that stalls one chosen
request: the worker is then known to be between two steps, and the test kills it there.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.harness import CeleryWorker, Stack, list_job_keys, running_stack, start_worker
from tests.reliability.conftest import (
    FAST_ENV,
    FleetFactory,
    assert_invariant,
    kill_pid,
    pool_children,
    result_of,
    wait_until,
)
from tests.reliability.tcp_gate import TcpGate
from worker.emulator.scenes import make_scene

MAX_DELIVERIES = int(FAST_ENV["GVW_MAX_DELIVERIES"])
VISIBILITY_S = float(FAST_ENV["GVW_VISIBILITY_TIMEOUT_S"])


# --- helpers ---------------------------------------------------------------------------------


def put_scene(stack: Stack, *, width: int = 400, height: int = 300, shapes: int = 2) -> str:
    scene = make_scene(width, height, shapes=shapes)
    return stack.put(f"r/{uuid.uuid4().hex}.png", scene.png_bytes())


def gated_worker(
    stack: Stack, gate: TcpGate, log_dir: Path, *, name: str, pool: str, concurrency: int
) -> CeleryWorker:
    """A worker whose S3 traffic goes through `gate` (the test's own client goes direct)."""
    env = {**stack.env, "AWS_ENDPOINT_URL_S3": gate.url}
    worker = start_worker(env, log_dir, name=name, pool=pool, concurrency=concurrency)
    stack.workers.append(worker)  # stopped with the stack
    return worker


def s3_path(uri: str) -> str:
    """`s3://bucket/key` -> `/bucket/key`, the path of boto3's path-style request line."""
    return "/" + uri.removeprefix("s3://")


def generate_requests(stack: Stack) -> list[dict[str, Any]]:
    return [r for r in stack.emulator.stats()["requests"] if r["method"] == "generate"]


def started_at(request: dict[str, Any]) -> float:
    """When the emulator began a call (its log's `time` is when it answered)."""
    return float(request["time"]) - float(request["duration_ms"]) / 1000


def lock_key(job_id: str) -> str:
    return f"gvw:lock:job:{job_id}"


def answer_key(job_id: str) -> str:
    return f"gvw:answer:{job_id}"


def gvw_cli(stack: Stack, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "worker.cli", *args],
        env=stack.env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


@contextlib.contextmanager
def on_each_lock(
    stack: Stack, job_id: str, action: Callable[[], None], *, delay_s: float = 0.0
) -> Iterator[list[float]]:
    """Calls `action` once per new holder of the job's lock (a new token in Redis), `delay_s`
    after it appears. Yields the list of times (monotonic) the action ran."""
    client = stack.redis.client(db=1)
    fired: list[float] = []
    stop = threading.Event()

    def watch() -> None:
        seen: set[bytes] = set()
        while not stop.is_set():
            token = None
            with contextlib.suppress(Exception):
                token = client.get(lock_key(job_id))
            if isinstance(token, bytes) and token not in seen:
                seen.add(token)
                if delay_s and stop.wait(delay_s):
                    return
                action()
                fired.append(time.monotonic())
            stop.wait(0.01)

    thread = threading.Thread(target=watch, name="lock-watch", daemon=True)
    thread.start()
    try:
        yield fired
    finally:
        stop.set()
        thread.join(timeout=5)
        client.close()


# --- 4. killed after the model answered, before the commit -----------------------------------


def test_pool_child_killed_between_answer_and_commit_is_published_without_a_new_call(
    fleet: FleetFactory, tmp_path: Path
) -> None:
    with fleet(workers=0) as stack, TcpGate(stack.moto.port) as gate:
        worker = gated_worker(stack, gate, tmp_path, name="w1", pool="prefork", concurrency=1)
        uri = put_scene(stack, width=800, height=600, shapes=3)
        job_id = f"paid-{uuid.uuid4().hex[:8]}"
        # the commit (result.json's conditional create) never reaches S3
        gate.arm(f"PUT /results/vision/{job_id}/result.json")
        stack.submit({"job_id": job_id, "task": "detect", "images": [uri]})
        assert gate.matched.wait(30), "the worker never tried to commit"

        # frozen between the answer and the commit: the answer is paid for and stored
        assert stack.model_calls() == 1
        assert stack.redis.client(db=1).exists(answer_key(job_id))
        assert result_of(stack, job_id) is None
        children = pool_children(worker.proc.pid)
        assert len(children) == 1
        killed_at = time.monotonic()
        kill_pid(children[0])
        gate.release()  # the dead child's request is dropped, never forwarded

        records = assert_invariant(stack, [job_id], timeout_s=60)
        assert records[0]["status"] == "succeeded"
        # handed back at once (reject_on_worker_lost), held up only by the dead lock's TTL
        assert time.monotonic() - killed_at < VISIBILITY_S
        assert records[0]["output"]["objects"], records[0]
        stack.wait_until_settled()  # nothing else comes back to ask again
        assert stack.model_calls() == 1
        assert worker.proc.poll() is None


def test_whole_worker_killed_before_the_commit_another_publishes_without_a_new_call(
    fleet: FleetFactory, tmp_path: Path
) -> None:
    visibility_s = 15  # the least Settings accepts here: hard limit 10 s + retry max 4 s
    extra = {"GVW_VISIBILITY_TIMEOUT_S": str(visibility_s)}
    with fleet(workers=0, extra_env=extra) as stack, TcpGate(stack.moto.port) as gate:
        first = gated_worker(stack, gate, tmp_path, name="w1", pool="threads", concurrency=1)
        uri = put_scene(stack)
        job_id = f"paid-{uuid.uuid4().hex[:8]}"
        gate.arm(f"PUT /results/vision/{job_id}/result.json")
        stack.submit({"job_id": job_id, "task": "caption", "images": [uri]})
        assert gate.matched.wait(30), "the worker never tried to commit"
        assert stack.model_calls() == 1
        assert stack.redis.client(db=1).exists(answer_key(job_id))

        first.kill()  # the whole process group: no goodbye, the message stays unacked
        killed_at = time.monotonic()
        gate.release()
        survivor = start_worker(stack.env, tmp_path, name="survivor", concurrency=1)
        stack.workers.append(survivor)

        records = assert_invariant(stack, [job_id], timeout_s=90)
        assert records[0]["status"] == "succeeded"
        # back after the visibility timeout, within kombu's restore interval and margin
        assert time.monotonic() - killed_at < visibility_s + 25
        stack.wait_until_settled()
        assert stack.model_calls() == 1
        assert job_id in survivor.log()


# --- 5. a job running longer than the visibility timeout ---------------------------------------


def test_job_outliving_the_visibility_timeout_commits_one_result_with_one_model_call(
    fleet: FleetFactory,
) -> None:
    # The thread pool (production's) enforces no time limits: only I/O timeouts bound an
    # attempt, and here the Gemini timeout lets one call outlive the visibility timeout.
    visibility_s = 15  # the least Settings accepts here: hard limit 10 s + retry max 4 s
    latency_s = visibility_s + 10
    extra = {
        "GVW_VISIBILITY_TIMEOUT_S": str(visibility_s),
        "GVW_GEMINI_TIMEOUT_S": str(latency_s + 30),
    }
    with fleet(workers=2, concurrency=1, extra_env=extra) as stack:
        stack.emulator.configure(latency_ms=latency_s * 1000)
        uri = put_scene(stack)
        job_id = stack.submit({"task": "caption", "images": [uri]})
        submitted_at = time.monotonic()
        # kombu hands the still-running message to the idle worker past the visibility
        # timeout: a second delivery of the same attempt, while the first still runs
        wait_until(
            lambda: all(job_id in w.log() for w in stack.workers),
            timeout_s=visibility_s + 20,
            what="the running job's redelivery to the other worker",
            interval_s=0.2,
        )
        assert time.monotonic() - submitted_at < latency_s, "redelivered only after the run"
        assert result_of(stack, job_id) is None  # the first run is still in its model call

        records = assert_invariant(stack, [job_id], timeout_s=latency_s + 30)
        assert records[0]["status"] == "succeeded"
        assert records[0]["attempt"] == 1  # the first run's commit
        stack.wait_until_settled()  # the duplicate's retries came back and found the result
        assert stack.model_calls() == 1  # the job's lock kept the duplicate from paying
        assert result_of(stack, job_id) == records[0]


def test_concurrent_runs_with_the_lock_lost_still_commit_exactly_one_result(
    fleet: FleetFactory,
) -> None:
    # The lock only saves money. Lose it (a Redis failover, a pause longer than its TTL)
    # while the job runs, and a duplicate runs at the same time: both pay, one commits,
    # the other finds result.json taken and removes its own artifacts.
    with fleet(workers=2, concurrency=1) as stack:
        stack.emulator.configure(latency_ms=6000)
        job: dict[str, Any] = {
            "job_id": f"race-{uuid.uuid4().hex[:8]}",
            "task": "detect",
            "images": [put_scene(stack, shapes=3)],
        }
        job_id = stack.submit(dict(job))
        redis1 = stack.redis.client(db=1)
        wait_until(
            lambda: bool(redis1.exists(lock_key(job_id))), timeout_s=30, what="the first run"
        )
        wait_until(lambda: stack.calls_in_flight() == 1, timeout_s=30, what="its model call")
        redis1.delete(lock_key(job_id))  # the lock is gone; its holder runs on
        stack.emulator.configure(latency_ms=0)
        stack.submit(dict(job))  # the duplicate, on the other (idle) worker

        records = assert_invariant(stack, [job_id], timeout_s=30)
        assert records[0]["status"] == "succeeded"
        # the first run answers after its 6 s and goes all the way to the commit, which
        # it loses: both runs end as successes, only one of them committed
        finished = f"vision.analyze[{job_id}] succeeded"
        wait_until(
            lambda: all(finished in w.log() for w in stack.workers),
            timeout_s=30,
            what="both runs to end",
        )
        outcomes = sorted(
            "committed" if "'already_done': False" in w.log() else "lost the commit"
            for w in stack.workers
        )
        assert outcomes == ["committed", "lost the commit"], outcomes
        # and the loser removed its own artifacts: only the winner's attempt is left
        winner = f"vision/{job_id}/attempts/{records[0]['attempt_id']}/"
        attempt_keys = [k for k in list_job_keys(stack.s3, job_id) if "/attempts/" in k]
        assert attempt_keys, "a detect result has an overlay"
        assert all(k.startswith(winner) for k in attempt_keys), attempt_keys
        assert result_of(stack, job_id) == records[0]
        assert_invariant(stack, [job_id])
        assert stack.model_calls() == 2


# --- 6. SIGTERM (soft shutdown) ----------------------------------------------------------------


@pytest.mark.parametrize(
    "pool",
    [
        # Celery's thread pool cannot stop a running thread on cold shutdown (kill_job is
        # not implemented: celery#10490, fix proposed in #10491), so the job stays with the
        # stopping worker. Strict: this turns red, on purpose, the day Celery fixes it.
        pytest.param(
            "threads",
            marks=pytest.mark.xfail(
                strict=True, reason="celery#10490: the threads pool cannot hand a job back"
            ),
        ),
        "prefork",
    ],
)
def test_sigterm_hands_the_running_job_back_at_once_and_another_worker_finishes_it(
    fleet: FleetFactory, pool: str
) -> None:
    # A long visibility timeout: a job that is not handed back could not return in time.
    # Time limits above the first worker's 30 s model call, so only the shutdown ends it.
    visibility_s = 60
    extra = {
        "REMAP_SIGTERM": "SIGQUIT",
        "GVW_VISIBILITY_TIMEOUT_S": str(visibility_s),
        "GVW_SOFT_TIME_LIMIT_S": "40",
        "GVW_HARD_TIME_LIMIT_S": "45",
        "GVW_GEMINI_TIMEOUT_S": "50",
    }
    with fleet(workers=1, concurrency=1, pool=pool, extra_env=extra) as stack:
        first = stack.worker
        stack.emulator.configure(latency_ms=30_000)
        uri = put_scene(stack)
        job_id = stack.submit({"task": "caption", "images": [uri]})
        wait_until(
            lambda: bool(stack.redis.client(db=1).exists(lock_key(job_id))),
            timeout_s=30,
            what="the job to start on the first worker",
        )
        wait_until(lambda: stack.calls_in_flight() == 1, timeout_s=30, what="its model call")
        second = start_worker(stack.env, first.log_path.parent, name="w2", pool=pool, concurrency=1)
        stack.workers.append(second)
        stack.emulator.configure(latency_ms=0)  # the call in flight keeps its 30 s

        term_at = time.monotonic()
        first.proc.send_signal(signal.SIGTERM)  # a deploy stops the main process
        records = assert_invariant(stack, [job_id], timeout_s=visibility_s + 30)
        finished_s = time.monotonic() - term_at
        assert records[0]["status"] == "succeeded"
        # handed back at once: finished by the other worker long before the visibility
        # timeout (or the first worker's 30 s model call) could have returned it
        assert finished_s < 20, finished_s
        # the result is visible before the worker logs the task's end: wait for the line
        wait_until(
            lambda: f"vision.analyze[{job_id}] succeeded" in second.log(),
            timeout_s=10,
            what="w2 to log the job's success",
        )
        wait_until(lambda: first.proc.poll() is not None, timeout_s=20, what="w1 to exit")


# --- 7. a job that crashes its worker every time -----------------------------------------------


def crash_on_read(gate: TcpGate, worker: CeleryWorker, uri: str) -> list[int]:
    """Each read of `uri` kills the pool process reading it (as an OOM kill or a crashing
    decoder would). Returns the list of killed pids, appended as it happens."""
    killed: list[int] = []

    def kill_readers() -> None:
        for pid in pool_children(worker.proc.pid):
            kill_pid(pid)
            killed.append(pid)

    gate.arm(f"GET {s3_path(uri)}", on_match=kill_readers)
    return killed


def test_job_that_kills_its_worker_every_time_is_dead_lettered_and_the_worker_stays_healthy(
    fleet: FleetFactory, tmp_path: Path
) -> None:
    with fleet(workers=0) as stack, TcpGate(stack.moto.port) as gate:
        worker = gated_worker(stack, gate, tmp_path, name="w1", pool="prefork", concurrency=1)
        poison = put_scene(stack)
        killed = crash_on_read(gate, worker, poison)
        job_id = stack.submit({"task": "caption", "images": [poison]})

        records = assert_invariant(stack, [job_id], timeout_s=45)
        assert records[0]["status"] == "failed"
        assert records[0]["error"]["code"] == "internal", records[0]
        # exactly GVW_MAX_DELIVERIES runs, each one killed, then the next delivery stops it
        assert gate.matches == MAX_DELIVERIES, (gate.matches, killed)
        assert stack.model_calls() == 0
        # the index entry is written just after error.json becomes visible
        wait_until(
            lambda: bool(stack.redis.client(db=1).zrange("gvw:dead_letters", 0, -1)),
            timeout_s=10,
            what="the dead-letter index entry",
        )
        letters = stack.redis.client(db=1).zrange("gvw:dead_letters", 0, -1)
        assert letters == [job_id.encode()]
        listed = gvw_cli(stack, "dead-letters", "list", "--json")
        assert listed.returncode == 0, listed.stderr
        entries = [json.loads(line) for line in listed.stdout.splitlines() if line.strip()]
        assert [(e["job_id"], e["code"]) for e in entries] == [(job_id, "internal")]

        # the loop is over: no further deliveries come back to crash the worker
        stack.wait_until_settled()
        assert gate.matches == MAX_DELIVERIES
        # and the worker is healthy: same main process, a normal job succeeds on it
        assert worker.proc.poll() is None
        healthy = stack.submit({"task": "caption", "images": [put_scene(stack)]})
        records = assert_invariant(stack, [job_id, healthy], timeout_s=60)
        assert records[1]["status"] == "succeeded"


def test_dead_letter_replay_reruns_the_job_under_its_own_id(
    fleet: FleetFactory, tmp_path: Path
) -> None:
    with fleet(workers=0) as stack, TcpGate(stack.moto.port) as gate:
        worker = gated_worker(stack, gate, tmp_path, name="w1", pool="prefork", concurrency=1)
        poison = put_scene(stack)
        crash_on_read(gate, worker, poison)
        job_id = stack.submit({"task": "caption", "images": [poison]})
        assert assert_invariant(stack, [job_id], timeout_s=45)[0]["status"] == "failed"

        gate.disarm()  # the cause is fixed (more memory, a patched decoder)
        replayed = gvw_cli(stack, "dead-letters", "replay", job_id)
        assert replayed.returncode == 0, replayed.stderr
        wait_until(
            lambda: result_of(stack, job_id) is not None,
            timeout_s=60,
            what="the replayed job's result",
            interval_s=0.2,
        )
        records = assert_invariant(stack, [job_id], timeout_s=10)
        assert records[0]["status"] == "succeeded"
        assert records[0]["job_id"] == job_id
        assert stack.model_calls() == 1
        assert stack.redis.client(db=1).zrange("gvw:dead_letters", 0, -1) == []


# --- 8. hard time limit ------------------------------------------------------------------------

# Short limits so that three attempts fit in a test; Settings still holds (20 > 4 + 4).
SHORT_LIMITS = {"GVW_SOFT_TIME_LIMIT_S": "3", "GVW_HARD_TIME_LIMIT_S": "4"}


def assert_no_more_work(stack: Stack, calls: int) -> None:
    """Nothing comes back after the record: no queued message, no new model call."""
    stack.wait_until_settled()  # every retry's countdown (GVW_RETRY_MAX_S = 4) has run out
    assert stack.model_calls() == calls
    broker = stack.redis.client(db=0)
    assert broker.llen("vision") == 0
    assert broker.hlen("unacked") == 0


def test_attempts_longer_than_the_time_limit_end_in_an_error_record_after_bounded_tries(
    fleet: FleetFactory,
) -> None:
    with fleet(workers=1, concurrency=1, pool="prefork", extra_env=SHORT_LIMITS) as stack:
        stack.emulator.configure(latency_ms=6000)  # every answer comes after the hard limit
        job_id = stack.submit({"task": "caption", "images": [put_scene(stack)]})
        submitted_at = time.monotonic()
        records = assert_invariant(stack, [job_id], timeout_s=60)
        assert records[0]["status"] == "failed"
        assert records[0]["error"]["code"] == "internal", records[0]
        assert records[0]["attempts"] <= MAX_DELIVERIES
        # three attempts of at most 4 s with short countdowns between them
        assert time.monotonic() - submitted_at < 3 * (4 + 4) + 10
        # the emulator logs a call when it answers, 6 s after it began
        wait_until(lambda: stack.calls_in_flight() == 0, timeout_s=30, what="calls answered")
        calls = stack.model_calls()
        assert 1 <= calls <= MAX_DELIVERIES
        assert_no_more_work(stack, calls)


def test_attempts_hung_past_the_hard_limit_are_killed_then_recorded_never_requeued_forever(
    fleet: FleetFactory,
) -> None:
    with fleet(workers=1, concurrency=1, pool="prefork", extra_env=SHORT_LIMITS) as stack:
        stack.emulator.configure(latency_ms=500)

        def freeze_the_pool() -> None:
            # a process stuck where the soft limit's signal cannot get it out (a C call
            # that never returns): only the hard limit's SIGKILL ends it
            for pid in pool_children(stack.worker.proc.pid):
                kill_pid(pid, signal.SIGSTOP)

        job_id = f"hung-{uuid.uuid4().hex[:8]}"
        with on_each_lock(stack, job_id, freeze_the_pool, delay_s=0.2) as frozen:
            stack.submit({"job_id": job_id, "task": "caption", "images": [put_scene(stack)]})
            records = assert_invariant(stack, [job_id], timeout_s=60)
            assert records[0]["status"] == "failed"
            assert records[0]["error"]["code"] == "internal", records[0]
            assert "hard time limit" in records[0]["error"]["message"], records[0]
            assert len(frozen) == MAX_DELIVERIES  # killed at the hard limit each time
            calls = stack.model_calls()
            assert calls <= MAX_DELIVERIES
            assert_no_more_work(stack, calls)
            assert len(frozen) == MAX_DELIVERIES
        assert stack.worker.proc.poll() is None


# --- 9. Redis killed and restarted while jobs are queued --------------------------------------


def test_redis_restart_with_jobs_queued_and_running_loses_and_doubles_nothing(
    tmp_path: Path,
) -> None:
    # `appendonly yes` as in production: the restarted Redis has the queue, the unacked
    # messages and the locks the killed one had acknowledged
    with running_stack(
        tmp_path, workers=2, concurrency=1, extra_env=FAST_ENV, redis_appendonly=True
    ) as stack:
        stack.emulator.configure(latency_ms=1500)
        uris = [put_scene(stack) for _ in range(3)]
        job_ids = [stack.submit({"task": "caption", "images": [uris[i % 3]]}) for i in range(8)]
        broker = stack.redis.client(db=0)
        wait_until(
            lambda: stack.emulator.stats()["generate_calls"] >= 2 and broker.llen("vision") >= 3,
            timeout_s=30,
            what="jobs running on both workers with more queued",
        )
        queued = broker.llen("vision")
        stack.redis.restart(down_s=2)  # SIGKILL: no goodbye to any client
        assert stack.redis.client(db=0).llen("vision") + 2 >= queued  # the AOF kept them

        records = assert_invariant(stack, job_ids, timeout_s=120)
        assert [r["status"] for r in records] == ["succeeded"] * len(job_ids), records
        stack.wait_until_settled()  # redelivered duplicates found their job committed
        for job_id in job_ids:
            assert result_of(stack, job_id) == records[job_ids.index(job_id)]
        # at most the jobs running at the restart are asked twice
        assert len(job_ids) <= stack.model_calls() <= len(job_ids) + 2
        assert all(w.proc.poll() is None for w in stack.workers)
        assert "ready." in stack.workers[0].log()


# Taking a job off the queue, the job crosses the worker's broker connection twice: Redis
# hands it over, and it is recorded as unacknowledged (kombu: the BRPOP reply, then the HSET
# naming it). `crossing` is the one the gate holds (its bytes name the job), with the worker
# frozen there.
CROSSINGS = pytest.mark.parametrize("crossing", [1, 2], ids=["first-crossing", "second-crossing"])


def worker_held_taking_a_job(
    stack: Stack, gate: TcpGate, log_dir: Path, pool: str, crossing: int
) -> tuple[CeleryWorker, str]:
    """A worker whose broker traffic goes through `gate`, frozen at that crossing of a job."""
    env = {**stack.env, "CELERY_BROKER_URL": f"redis://127.0.0.1:{gate.port}/0"}
    worker = start_worker(env, log_dir, name="w1", pool=pool, concurrency=1)
    stack.workers.append(worker)  # stopped with the stack
    job_id = f"t-{uuid.uuid4().hex[:12]}"
    gate.arm(job_id, replies=True, skip=crossing - 1)
    stack.submit({"job_id": job_id, "task": "caption", "images": [put_scene(stack)]})
    assert gate.matched.wait(30), "the worker never took the job"
    return worker, job_id


@CROSSINGS
def test_a_worker_killed_as_it_takes_a_job_off_the_queue_leaves_the_job_for_another(
    fleet: FleetFactory, tmp_path: Path, crossing: int
) -> None:
    # a worker killed outright (the OOM killer, a lost node) must leave the job where
    # another worker finds it: on the queue, or recorded for the visibility timeout
    with fleet(workers=0) as stack, TcpGate(stack.redis.port) as gate:
        victim, job_id = worker_held_taking_a_job(stack, gate, tmp_path, "threads", crossing)

        victim.proc.kill()  # SIGKILL: nothing of the worker runs on the way out
        victim.proc.wait(timeout=20)
        gate.release()
        stack.workers.append(start_worker(stack.env, tmp_path, name="w2", concurrency=1))

        # at worst the visibility timeout (and a restore interval) brings it back
        records = assert_invariant(stack, [job_id], timeout_s=VISIBILITY_S + 60)
        assert records[0]["status"] == "succeeded", records[0]
        assert stack.model_calls() == 1


@CROSSINGS
def test_redis_lost_as_a_job_is_taken_off_the_queue_loses_nothing_and_waits_no_visibility_timeout(
    fleet: FleetFactory, tmp_path: Path, crossing: int
) -> None:
    with fleet(workers=0, redis_appendonly=True) as stack, TcpGate(stack.redis.port) as gate:
        worker, job_id = worker_held_taking_a_job(stack, gate, tmp_path, "prefork", crossing)

        stack.redis.restart(down_s=0.5)  # SIGKILL: no goodbye to any client
        gate.release()

        # the job runs as soon as Redis answers again, well inside the visibility timeout
        # (a record waiting in `unacked` would come back only after it)
        records = assert_invariant(stack, [job_id], timeout_s=VISIBILITY_S - 5)
        assert records[0]["status"] == "succeeded", records[0]
        assert stack.model_calls() == 1
        assert worker.proc.poll() is None


# --- 10. a 429 with retryDelay holds back the whole fleet --------------------------------------


@pytest.mark.wallclock  # call starts to 0.5 s
def test_429_with_retry_delay_stops_every_worker_for_that_long_then_all_jobs_succeed(
    fleet: FleetFactory,
) -> None:
    retry_delay_s = 3.0
    with fleet(workers=2, concurrency=2) as stack:  # four calls in flight at a time
        stack.emulator.configure(latency_ms=800)
        uri = put_scene(stack)
        job_ids = [stack.submit({"task": "caption", "images": [uri]}) for _ in range(20)]
        wait_until(lambda: stack.model_calls() >= 4, timeout_s=30, what="the first calls")
        stack.emulator.queue_fault("429", retry_delay_s=retry_delay_s)  # the next call's

        records = assert_invariant(stack, job_ids, timeout_s=60)
        assert [r["status"] for r in records] == ["succeeded"] * len(job_ids)
        requests = generate_requests(stack)
        refused = [r for r in requests if r["status_code"] == 429]
        assert len(refused) == 1, refused
        assert len(requests) == len(job_ids) + 1  # the refused call, then one per job
        served_at = float(refused[0]["time"])
        # Calls already under way when the 429 was answered may still arrive a moment
        # later (request building, the emulator's own scheduling): 0.5 s of grace. After
        # that, nothing until retryDelay has passed.
        relative = sorted(round(started_at(r) - served_at, 2) for r in requests)
        during = [t for t in relative if 0.5 < t < retry_delay_s - 0.1]
        assert during == [], f"calls {during} s after the 429, inside its retryDelay: {relative}"
        after = [r for r in requests if started_at(r) >= served_at + retry_delay_s - 0.1]
        assert len(after) >= 4, "the jobs waiting out the delay called afterwards"


def test_consecutive_429s_are_each_waited_out_and_the_job_then_succeeds(
    fleet: FleetFactory,
) -> None:
    # more 429s in a row than Celery's default retry limit (3), fewer than GVW_MAX_RETRIES
    refusals, retry_delay_s = 4, 1.0
    with fleet(workers=1, concurrency=1) as stack:
        stack.emulator.queue_fault("429", retry_delay_s=retry_delay_s, count=refusals)
        job_id = stack.submit({"task": "caption", "images": [put_scene(stack)]})
        records = assert_invariant(stack, [job_id], timeout_s=30)
        assert records[0]["status"] == "succeeded", records[0]
        requests = generate_requests(stack)
        assert [r["status_code"] for r in requests] == [429] * refusals + [200]
        for before, after in itertools.pairwise(requests):
            assert started_at(after) - float(before["time"]) >= retry_delay_s - 0.05


# --- 11. a per-day quota -------------------------------------------------------------------------


def test_per_day_quota_fails_the_job_as_quota_exhausted_after_one_call(
    fleet: FleetFactory,
) -> None:
    with fleet(workers=1, concurrency=2) as stack:
        # the day's quota is gone: every call would get the same answer until midnight
        stack.emulator.queue_fault("429_daily", count=50)
        job_id = stack.submit({"task": "caption", "images": [put_scene(stack)]})
        submitted_at = time.monotonic()
        records = assert_invariant(stack, [job_id], timeout_s=30)
        assert records[0]["status"] == "failed"
        assert records[0]["error"]["code"] == "quota_exhausted", records[0]
        assert records[0]["attempts"] == 1
        assert time.monotonic() - submitted_at < 10  # no backoff ladder before giving up
        assert stack.model_calls() == 1
        stack.wait_until_settled()  # every retry countdown over: nothing came back to try again
        assert stack.model_calls() == 1
        assert [f["count"] for f in stack.emulator.pending_faults()] == [49]
