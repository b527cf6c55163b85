"""Runs under load and failures (docs/runs.md): a run of 2,000 jobs watched to its end
while a worker is killed and Redis restarted, every count still right; a run's cost cap
that holds within one request under 8 concurrent workers, then releases what it held."""

from __future__ import annotations

import io
import json
import re
import signal
import subprocess
import sys
import uuid
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from PIL import Image

from tests.harness import REPO_ROOT, Stack, start_worker, wait_until
from tests.reliability.conftest import FleetFactory

RUN_JOBS = 2000


def tiny_png(index: int) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (24, 16), (index % 256, (index // 256) % 256, 200)).save(buffer, "PNG")
    return buffer.getvalue()


def put_many(stack: Stack, prefix: str, count: int) -> None:
    with ThreadPoolExecutor(max_workers=8) as pool:
        list(pool.map(lambda i: stack.put(f"{prefix}/{i:05d}.png", tiny_png(i)), range(count)))


def gvw(stack: Stack, *args: str, timeout_s: float = 300) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "worker.cli", *args],
        env=stack.env,
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=timeout_s,
        stdin=subprocess.DEVNULL,
    )


def run_id_of(stdout: str) -> str:
    found = re.match(r"run (\S+)", stdout)
    assert found is not None, stdout
    return found.group(1)


def show(stack: Stack, run_id: str) -> dict[str, Any]:
    done = gvw(stack, "runs", "show", run_id, "--json")
    assert done.returncode == 0, done.stderr
    return dict(json.loads(done.stdout))


def result_records(stack: Stack, job_ids: set[str]) -> dict[str, dict[str, Any]]:
    """The result.json of every job id given, from one listing and a read each."""
    found: dict[str, dict[str, Any]] = {}
    paginator = stack.s3.get_paginator("list_objects_v2")
    for page in paginator.paginate(Bucket="results", Prefix="vision/"):
        for item in page.get("Contents", []):
            parts = item["Key"].split("/")
            if len(parts) == 3 and parts[2] == "result.json" and parts[1] in job_ids:
                body = stack.s3.get_object(Bucket="results", Key=item["Key"])["Body"].read()
                found[parts[1]] = json.loads(body)
    return found


def member_ids(stack: Stack, run_id: str) -> set[str]:
    ids: set[str] = set()
    listed = stack.s3.list_objects_v2(Bucket="results", Prefix=f"vision/_runs/{run_id}/members/")
    for item in listed.get("Contents", []):
        body = stack.s3.get_object(Bucket="results", Key=item["Key"])["Body"].read()
        ids.update(json.loads(line)["job_id"] for line in body.splitlines() if line.strip())
    return ids


def test_a_run_of_2000_jobs_is_watched_to_its_end_through_a_killed_worker_and_a_redis_restart(
    fleet: FleetFactory,
) -> None:
    with fleet(workers=2, concurrency=4, redis_appendonly=True) as stack:
        prefix = f"big-{uuid.uuid4().hex[:8]}"
        put_many(stack, prefix, RUN_JOBS)
        enqueued = gvw(stack, "enqueue-prefix", f"s3://inbox/{prefix}/", "--task", "caption")
        assert enqueued.returncode == 0, enqueued.stderr
        run_id = run_id_of(enqueued.stdout)
        assert f"listed {RUN_JOBS}, submitted {RUN_JOBS}" in enqueued.stdout

        # what an operator watches: one JSON summary a second until the run ends
        watch = subprocess.Popen(
            [sys.executable, "-m", "worker.cli", "runs", "show", run_id, "--watch",
             "--json", "--interval", "1"],
            env=stack.env, cwd=REPO_ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
            text=True, stdin=subprocess.DEVNULL,
        )  # fmt: skip
        try:
            wait_until(
                lambda: show(stack, run_id)["counts"]["succeeded"] >= RUN_JOBS // 4,
                timeout_s=240,
                what="a quarter of the run",
                interval_s=1,
            )
            # a whole worker dies mid-run (its jobs come back after the visibility
            # timeout), and another takes its place
            victim = stack.workers[0]
            victim.proc.send_signal(signal.SIGKILL)
            victim.proc.wait(timeout=20)
            stack.workers.append(
                start_worker(stack.env, victim.log_path.parent, name="w3", concurrency=4)
            )
            wait_until(
                lambda: show(stack, run_id)["counts"]["succeeded"] >= RUN_JOBS // 2,
                timeout_s=240,
                what="half the run",
                interval_s=1,
            )
            stack.redis.restart(down_s=2)  # SIGKILL; appendonly, as in production
            try:
                out, err = watch.communicate(timeout=600)
            except subprocess.TimeoutExpired:
                raise AssertionError(stuck(stack, run_id)) from None
        finally:
            if watch.poll() is None:
                watch.kill()
                watch.communicate()
        assert watch.returncode == 0, err[-3000:]

        seen = [json.loads(line) for line in out.splitlines() if line.strip()]
        final = show(stack, run_id)
        members = member_ids(stack, run_id)
        records = result_records(stack, members)
        calls = stack.model_calls()

    # the watcher saw the run move forward, with an ETA, and end
    ended = [s["counts"]["succeeded"] + s["counts"]["failed"] for s in seen]
    assert ended == sorted(ended), ended  # never backwards, through both failures
    assert any(0 < n < RUN_JOBS for n in ended)
    assert any(s["eta_s"] and s["eta_s"] > 0 and s["rate_per_min"] > 0 for s in seen)
    assert seen[-1]["state"] == "finished"
    # every count right: the run's members are the prefix's jobs, each counted once
    assert len(members) == RUN_JOBS and len(records) == RUN_JOBS
    assert final["members"] == RUN_JOBS and final["state"] == "finished"
    assert final["counts"]["succeeded"] == RUN_JOBS and final["counts"]["failed"] == 0
    assert all(final["counts"][s] == 0 for s in ("queued", "running", "waiting", "held"))
    assert all(r["run"] == run_id for r in records.values())
    # what the run spent is what its records say they cost
    spent = sum(r["usage"]["cost_usd"] for r in records.values())
    assert abs(final["spent_usd"] - spent) < 1e-6, (final["spent_usd"], spent)
    # asked again at most for the jobs in flight at the kill and the restart
    assert RUN_JOBS <= calls <= RUN_JOBS + 2 * 4 + 2 * 4
    assert seen[-1]["counts"] == final["counts"] and seen[-1]["sealed"]


def stuck(stack: Stack, run_id: str) -> str:
    """What a run that did not end shows: its counts, and its members with no record."""
    summary = show(stack, run_id)
    members = member_ids(stack, run_id)
    missing = sorted(members - set(result_records(stack, members)))
    states = stack.redis.client(db=1).hgetall(f"gvw:run:{run_id}:jobs")
    live = {k.decode(): v.decode() for k, v in states.items() if v.decode() != "s"}
    return (
        f"the run did not end: {summary['counts']}, members {summary['members']}; "
        f"{len(missing)} members without a result: {missing[:10]}; not succeeded in the "
        f"ledger: {dict(list(live.items())[:10])}"
    )


CAP_JOBS = 40
CAP_OPTIONS = '{"max_output_tokens": 64, "thinking_budget": 0}'


def test_a_run_cost_cap_holds_within_one_request_under_8_workers_then_resume_releases(
    fleet: FleetFactory,
) -> None:
    with fleet(workers=4, concurrency=2) as stack:
        stack.emulator.configure(latency_ms=200)  # calls overlap: reservations compete
        prefix = f"capped-{uuid.uuid4().hex[:8]}"
        put_many(stack, prefix, CAP_JOBS)
        args = ["enqueue-prefix", f"s3://inbox/{prefix}/", "--task", "caption"]
        args += ["--options", CAP_OPTIONS]
        dry = gvw(stack, *args, "--dry-run", "--sample", "5")
        estimate = re.search(r"cost: at most \$([\d.]+) interactive", dry.stdout)
        assert estimate is not None, dry.stdout
        per_job_usd = float(estimate.group(1)) / CAP_JOBS
        cap_usd = round(per_job_usd * 12.5, 6)  # room for a dozen estimates at a time

        enqueued = gvw(stack, *args, "--max-usd", str(cap_usd))
        assert enqueued.returncode == 0, enqueued.stderr
        run_id = run_id_of(enqueued.stdout)

        # every job ends or is held: none waits, none fails
        def settled() -> bool:
            counts = show(stack, run_id)["counts"]
            return counts["succeeded"] + counts["held"] == CAP_JOBS

        wait_until(settled, timeout_s=120, what="every job ended or held", interval_s=0.5)
        capped = show(stack, run_id)
        members = member_ids(stack, run_id)
        paid = result_records(stack, members)
        calls_capped = stack.model_calls()

        resumed = gvw(stack, "runs", "resume", run_id, "--max-usd", "100")
        assert resumed.returncode == 0, resumed.stderr
        wait_until(
            lambda: show(stack, run_id)["state"] == "finished",
            timeout_s=120,
            what="the resumed run to finish",
            interval_s=0.5,
        )
        final = show(stack, run_id)
        all_records = result_records(stack, members)
        calls_final = stack.model_calls()

    costs = [r["usage"]["cost_usd"] for r in paid.values()]
    held = capped["counts"]["held"]
    assert held > 0 and capped["counts"]["failed"] == 0  # the cap bound: jobs held, not failed
    assert len(paid) == CAP_JOBS - held == calls_capped  # a held job never called Gemini
    # never more than the cap, plus one request's error
    assert sum(costs) <= cap_usd + max(costs), (sum(costs), cap_usd)
    assert f"sent again {held} held jobs" in resumed.stdout
    assert final["counts"]["succeeded"] == CAP_JOBS and final["max_usd"] == 100
    assert len(all_records) == CAP_JOBS
    assert calls_final == CAP_JOBS  # nothing paid twice


def test_resume_raises_the_cap_in_run_json(fleet: FleetFactory) -> None:
    """The cap is part of the run's definition: what `runs show` reports after a resume
    is what run.json says, durable without Redis."""
    with fleet(workers=1, concurrency=1) as stack:
        prefix = f"capdef-{uuid.uuid4().hex[:8]}"
        put_many(stack, prefix, 2)
        enqueued = gvw(
            stack, "enqueue-prefix", f"s3://inbox/{prefix}/", "--task", "caption",
            "--max-usd", "0",
        )  # fmt: skip
        run_id = run_id_of(enqueued.stdout)
        wait_until(
            lambda: show(stack, run_id)["counts"]["held"] == 2,
            timeout_s=60,
            what="both jobs held by a $0 cap",
        )
        gvw(stack, "runs", "resume", run_id, "--max-usd", "5")
        wait_until(lambda: show(stack, run_id)["state"] == "finished", timeout_s=60, what="end")
        body = stack.s3.get_object(Bucket="results", Key=f"vision/_runs/{run_id}/run.json")
        assert json.loads(body["Body"].read())["max_usd"] == 5


def test_a_batch_mode_run_is_capped_at_the_batch_price_then_resumed(fleet: FleetFactory) -> None:
    """Batch mode: each request reserves its estimate at the batch price when it parks,
    and settles at its answer's cost when the batch's answer is published."""
    env = {"GVW_BATCH_MAX_WAIT_S": "0.5", "GVW_BATCH_POLL_S": "0.5"}
    jobs = 12
    with fleet(workers=2, concurrency=2, extra_env=env) as stack:
        stack.emulator.configure(batch_done_after_s=0.5)
        prefix = f"capbatch-{uuid.uuid4().hex[:8]}"
        put_many(stack, prefix, jobs)
        args = ["enqueue-prefix", f"s3://inbox/{prefix}/", "--task", "caption"]
        args += ["--options", CAP_OPTIONS, "--batch"]
        dry = gvw(stack, *args, "--dry-run", "--sample", "3")
        estimate = re.search(r"\$([\d.]+) through the Batch API", dry.stdout)
        assert estimate is not None, dry.stdout
        per_job_usd = float(estimate.group(1)) / jobs
        cap_usd = round(per_job_usd * 4.5, 9)  # room for four batch estimates
        run_id = run_id_of(gvw(stack, *args, "--max-usd", str(cap_usd)).stdout)

        def settled() -> bool:
            counts = show(stack, run_id)["counts"]
            return counts["succeeded"] + counts["held"] == jobs and counts["batched"] == 0

        wait_until(settled, timeout_s=120, what="every job answered or held", interval_s=0.5)
        capped = show(stack, run_id)
        paid = result_records(stack, member_ids(stack, run_id))
        resumed = gvw(stack, "runs", "resume", run_id, "--no-cap")
        assert resumed.returncode == 0, resumed.stderr
        wait_until(
            lambda: show(stack, run_id)["state"] == "finished", timeout_s=120, what="the end"
        )
        final = show(stack, run_id)
        records = result_records(stack, member_ids(stack, run_id))

    costs = [r["usage"]["cost_usd"] for r in paid.values()]
    assert capped["counts"]["held"] > 0 and len(paid) >= 4
    assert all(r["mode"] == "batch" for r in records.values())
    assert sum(costs) <= cap_usd + max(costs), (sum(costs), cap_usd)
    assert final["counts"]["succeeded"] == jobs and final["max_usd"] is None
