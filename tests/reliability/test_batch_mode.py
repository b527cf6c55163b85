"""Backfills through the Gemini Batch API, on real local services: `celery worker`
processes, redis-server, moto's S3 server, and the emulator serving the Batch API the SDK
uses (its time to completion and its failures set by each test)."""

from __future__ import annotations

import hashlib
import json
import signal
import uuid
from typing import Any

from tests.harness import Stack, start_worker, wait_until
from tests.integration.test_cli import gvw
from tests.reliability.conftest import FleetFactory, assert_invariant
from worker.emulator.scenes import make_scene

BATCH_ENV = {
    "GVW_BATCH_MAX_WAIT_S": "0.5",  # a batch goes as soon as its first job waited this long
    "GVW_BATCH_POLL_S": "0.5",
    "GVW_BATCH_MAX_REQUESTS": "100",
}


def put_scenes(stack: Stack, prefix: str, count: int) -> list[str]:
    return [
        stack.put(
            f"{prefix}/{index:03d}.png",
            make_scene(320, 240, shapes=["red circle", "blue rectangle"], seed=index).png_bytes(),
        )
        for index in range(count)
    ]


def batch_stats(stack: Stack) -> tuple[int, int, int]:
    """Batches created, batch requests answered, interactive calls."""
    stats = stack.emulator.stats()
    return stats["batches_created"], stats["batch_calls"], stats["generate_calls"]


def batch_requests_sent(stack: Stack) -> int:
    return int(stack.emulator.stats()["batch_requests_total"])


def submit_one_pending_batch(stack: Stack, uris: list[str]) -> list[str]:
    """A batch-mode caption job per image; returns their ids once their one batch is
    submitted to Gemini."""
    job_ids = [
        stack.submit({"task": "caption", "images": [uri], "options": {"mode": "batch"}})
        for uri in uris
    ]
    wait_until(
        lambda: batch_stats(stack)[0] == 1 and _open_batches(stack) == 1,
        timeout_s=60,
        what="the batch to be submitted",
    )
    return job_ids


def test_a_prefix_backfilled_with_batch_is_answered_once_at_the_batch_price(
    fleet: FleetFactory,
) -> None:
    env = {**BATCH_ENV, "GVW_ANSWER_CACHE_TTL_S": "3600"}
    with fleet(workers=2, concurrency=2, extra_env=env) as stack:
        stack.emulator.configure(batch_done_after_s=1.0)
        prefix = f"backfill-{uuid.uuid4().hex[:8]}"
        uris = put_scenes(stack, prefix, 12)
        done = gvw(
            "enqueue-prefix",
            f"s3://inbox/{prefix}/",
            "--task",
            "caption",
            "--batch",
            "--wait",
            "--timeout",
            "120",
            env=stack.env,
            timeout_s=180,
        )
        assert done.returncode == 0, done.stderr[-2000:]
        assert "submitted 12" in done.stdout and "succeeded 12, failed 0" in done.stdout
        created, batch_calls, generate_calls = batch_stats(stack)
        keys = [
            k for k in _result_keys(stack) if k.startswith("vision/") and k.endswith("result.json")
        ]
        records = [_read(stack, key) for key in keys]
        rerun = gvw(
            "enqueue-prefix", f"s3://inbox/{prefix}/", "--task", "caption",
            env=stack.env, timeout_s=120,
        )  # fmt: skip
        # a batch's answer is paid once too: the same request later, interactive and
        # under another job id, reuses it from the answer cache
        again = stack.record(stack.submit({"task": "caption", "images": [uris[0]]}))
        calls_after = batch_stats(stack)

    assert (batch_calls, generate_calls) == (12, 0)  # every answer bought once, in a batch
    assert 1 <= created <= 3
    assert len(records) >= 12
    ours = [r for r in records if r["images"][0]["uri"].startswith(f"s3://inbox/{prefix}/")]
    assert len(ours) == 12
    for record in ours:
        assert record["mode"] == "batch" and "circle" in record["output"]["text"]
        usage = record["usage"]
        full = (usage["prompt_tokens"] * 0.30 + usage["output_tokens"] * 2.50) / 1e6
        assert abs(record["usage"]["cost_usd"] - full / 2) < 1e-7, usage
    # the same prefix without --batch is the same jobs: nothing to do
    assert "submitted 0, skipped as done 12" in rerun.stdout
    assert again["status"] == "succeeded" and again["mode"] == "interactive", again
    assert again["answer_reused_from"]["job_id"] in {r["job_id"] for r in ours}
    assert again["usage"]["cost_usd"] == 0 and calls_after[1:] == (12, 0)


def test_workers_killed_while_a_batch_is_pending_resume_it_without_paying_twice(
    fleet: FleetFactory, tmp_path: Any
) -> None:
    with fleet(workers=2, concurrency=2, extra_env=BATCH_ENV) as stack:
        stack.emulator.configure(batch_done_after_s=3600)  # pending until the test says
        uris = put_scenes(stack, f"kill-{uuid.uuid4().hex[:8]}", 6)
        job_ids = submit_one_pending_batch(stack, uris)
        for worker in stack.workers:
            worker.proc.send_signal(signal.SIGKILL)
        for worker in stack.workers:
            worker.proc.wait(timeout=30)
        # an object replaced while its batch is pending: the answer is about what was sent
        sent = stack.s3.get_object(Bucket="inbox", Key=uris[0].removeprefix("s3://inbox/"))
        sent_sha256 = hashlib.sha256(sent["Body"].read()).hexdigest()
        stack.put(uris[0].removeprefix("s3://inbox/"), make_scene(200, 100, seed=99).png_bytes())
        stack.emulator.configure(batch_done_after_s=0)  # the batch finishes while none runs
        stack.workers[:] = [
            start_worker(stack.env, tmp_path, name=f"again{n}", concurrency=2) for n in range(2)
        ]
        records = assert_invariant(stack, job_ids, timeout_s=120)
        created, batch_calls, generate_calls = batch_stats(stack)

    assert all(r["status"] == "succeeded" and r["mode"] == "batch" for r in records), records
    assert (created, batch_calls, generate_calls) == (1, 6, 0)
    # the result describes the image the batch request sent, not the object as it is now
    assert records[0]["images"][0]["sha256"] == sent_sha256
    assert records[0]["images"][0]["width"] == 320


def test_a_follower_killed_while_its_batch_is_created_adopts_it_instead_of_paying_twice(
    fleet: FleetFactory, tmp_path: Any
) -> None:
    with fleet(workers=1, concurrency=2, extra_env=BATCH_ENV) as stack:
        # Gemini has the batch, and the follower dies before it hears its name
        stack.emulator.configure(batch_create_reply_after_s=120, batch_done_after_s=0)
        uris = put_scenes(stack, f"adopt-{uuid.uuid4().hex[:8]}", 3)
        job_ids = [
            stack.submit({"task": "caption", "images": [uri], "options": {"mode": "batch"}})
            for uri in uris
        ]
        wait_until(lambda: batch_stats(stack)[0] == 1, timeout_s=60, what="the batch created")
        stack.workers[0].proc.send_signal(signal.SIGKILL)
        stack.workers[0].proc.wait(timeout=30)
        stack.emulator.configure(batch_create_reply_after_s=0)
        stack.workers[:] = [start_worker(stack.env, tmp_path, name="again", concurrency=2)]
        records = assert_invariant(stack, job_ids, timeout_s=120)
        created, batch_calls, generate_calls = batch_stats(stack)
        log = stack.workers[0].log()

    assert all(r["status"] == "succeeded" and r["mode"] == "batch" for r in records), records
    assert (created, batch_calls, generate_calls) == (1, 3, 0)  # found by its name, once
    assert "adopted a batch submitted by a run that died" in log


def test_redis_killed_while_a_batch_is_pending_loses_nothing_and_pays_once(
    fleet: FleetFactory,
) -> None:
    # `appendonly yes` as in production: the restarted Redis has the waiting requests, the
    # batch's record and the follower's schedule the killed one had acknowledged. A
    # follower run lost in the outage would come back after the visibility timeout; the
    # workers start a new one long before that.
    env = {**BATCH_ENV, "GVW_VISIBILITY_TIMEOUT_S": "300"}
    with fleet(workers=2, concurrency=2, extra_env=env, redis_appendonly=True) as stack:
        stack.emulator.configure(batch_done_after_s=3600)  # pending until the test says
        uris = put_scenes(stack, f"redis-{uuid.uuid4().hex[:8]}", 4)
        job_ids = submit_one_pending_batch(stack, uris)
        # an operator asking about a job in a pending batch is told where it is
        status = gvw("status", job_ids[0], "--json", env=stack.env)
        assert status.returncode == 0, status.stderr
        assert json.loads(status.stdout)["status"] == "batched", status.stdout

        stack.redis.restart(down_s=1)  # SIGKILL while the follower polls the batch
        stack.emulator.configure(batch_done_after_s=0)  # then the batch finishes
        records = assert_invariant(stack, job_ids, timeout_s=60)
        created, batch_calls, generate_calls = batch_stats(stack)
        alive = all(w.proc.poll() is None for w in stack.workers)

    assert all(r["status"] == "succeeded" and r["mode"] == "batch" for r in records), records
    assert (created, batch_calls, generate_calls) == (1, 4, 0)
    assert alive


def test_failed_requests_are_retried_and_an_expired_batch_sends_its_jobs_back(
    fleet: FleetFactory,
) -> None:
    # every batch as a JSONL file through the File API (the other tests send them inline)
    env = {**BATCH_ENV, "GVW_BATCH_FALLBACK": "interactive", "GVW_BATCH_INLINE_MAX_BYTES": "0"}
    with fleet(workers=1, concurrency=2, extra_env=env) as stack:
        stack.emulator.configure(batch_done_after_s=0.5)
        stack.emulator.queue_fault("batch_request", count=1)  # the first request of a batch
        uris = put_scenes(stack, f"retry-{uuid.uuid4().hex[:8]}", 3)
        first = [
            stack.submit({"task": "caption", "images": [u], "options": {"mode": "batch"}})
            for u in uris
        ]
        retried = assert_invariant(stack, first, timeout_s=120)
        after_retry = batch_stats(stack)
        requests_sent = batch_requests_sent(stack)

        stack.emulator.queue_fault("batch_expired")
        expired_uri = put_scenes(stack, f"expired-{uuid.uuid4().hex[:8]}", 1)[0]
        sent_back = stack.submit(
            {"task": "caption", "images": [expired_uri], "options": {"mode": "batch"}}
        )
        (fallback,) = assert_invariant(stack, [sent_back], timeout_s=120)

        # an operator cancels a pending batch: its job goes back too
        stack.emulator.configure(batch_done_after_s=3600)
        cancelled_uri = put_scenes(stack, f"cancel-{uuid.uuid4().hex[:8]}", 1)[0]
        cancelled_job = stack.submit(
            {"task": "caption", "images": [cancelled_uri], "options": {"mode": "batch"}}
        )
        wait_until(lambda: _open_batches(stack) == 1, timeout_s=60, what="a pending batch")
        listed = [
            json.loads(line)
            for line in gvw("batches", "list", "--json", env=stack.env).stdout.splitlines()
        ]
        pending = [b for b in listed if b["state"] == "submitted"]
        assert len(pending) == 1 and pending[0]["jobs"] == 1, listed
        assert {b["source"] for b in listed} == {"file"}
        cancel = gvw("batches", "cancel", pending[0]["batch_id"], env=stack.env)
        assert cancel.returncode == 0, cancel.stderr
        (after_cancel,) = assert_invariant(stack, [cancelled_job], timeout_s=120)
        shown = gvw("batches", "show", pending[0]["batch_id"], env=stack.env).stdout
        final = batch_stats(stack)

    assert all(r["status"] == "succeeded" and r["mode"] == "batch" for r in retried)
    # 3 requests, one failed inside its batch and was asked again in the next
    assert requests_sent == 4 and after_retry[1] == 3
    assert after_retry[0] >= 2 and after_retry[2] == 0
    # the expired batch answered nothing; its job went the interactive way
    assert fallback["status"] == "succeeded" and fallback["mode"] == "interactive"
    assert after_cancel["status"] == "succeeded" and after_cancel["mode"] == "interactive"
    assert "state: returned; at Gemini: JOB_STATE_CANCELLED" in shown, shown
    assert final[2] == 2


def test_an_unreadable_batch_answer_is_asked_again_within_the_retry_policy_then_fails(
    fleet: FleetFactory,
) -> None:
    # GVW_OUTPUT_RETRIES=2: the first answer and two more, each in a batch of its own
    with fleet(workers=1, concurrency=2, extra_env=BATCH_ENV) as stack:
        stack.emulator.configure(batch_done_after_s=0)
        stack.emulator.queue_fault("garbage", count=50)
        (uri,) = put_scenes(stack, f"garbage-{uuid.uuid4().hex[:8]}", 1)
        job_id = stack.submit(
            {"task": "detect", "images": [uri], "prompt": "shapes", "options": {"mode": "batch"}}
        )
        (record,) = assert_invariant(stack, [job_id], timeout_s=90)
        created, batch_calls, generate_calls = batch_stats(stack)
        gvw("batches", "list", env=stack.env)

    assert record["status"] == "failed" and record["error"]["code"] == "model_output_invalid"
    assert (created, batch_calls, generate_calls) == (3, 3, 0), (created, batch_calls)


def test_a_batch_gemini_refuses_for_good_sends_each_job_its_own_answer_or_error(
    fleet: FleetFactory,
) -> None:
    with fleet(workers=1, concurrency=2, extra_env=BATCH_ENV) as stack:
        stack.emulator.configure(batch_done_after_s=0)
        uris = put_scenes(stack, f"refused-{uuid.uuid4().hex[:8]}", 2)
        # the model is gone by the time the batch is submitted: a 404, for good
        stack.emulator.configure(model_prefixes=["gemini-9"])
        job_ids = [
            stack.submit({"task": "caption", "images": [u], "options": {"mode": "batch"}})
            for u in uris
        ]
        records = assert_invariant(stack, job_ids, timeout_s=60)
        created = batch_stats(stack)[0]

    assert [r["error"]["code"] for r in records] == ["model_error"] * 2, records
    assert created == 0


def _open_batches(stack: Stack) -> int:
    return int(stack.redis.client(db=1).scard("gvw:batch:open"))


def _result_keys(stack: Stack) -> list[str]:
    keys: list[str] = []
    for page in stack.s3.get_paginator("list_objects_v2").paginate(Bucket="results"):
        keys.extend(obj["Key"] for obj in page.get("Contents", []))
    return keys


def _read(stack: Stack, key: str) -> dict[str, Any]:
    return dict(json.loads(stack.s3.get_object(Bucket="results", Key=key)["Body"].read()))
