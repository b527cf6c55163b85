"""Runs (docs/runs.md) on real services: `gvw enqueue-prefix` makes one, the workers count
its jobs and keep its summary.json, `gvw runs show | list | retry` and
`VisionClient.run_status` read it."""

from __future__ import annotations

import json
import uuid
from typing import Any

import pytest

from tests.harness import Stack, wait_until
from tests.integration.test_bulk import tiny_png
from tests.integration.test_cli import gvw
from worker.producers import VisionClient
from worker.settings import Settings
from worker.storage import StoreRouter

pytestmark = pytest.mark.integration


def put_prefix(stack: Stack, prefix: str, good: int, bad: int) -> None:
    for index in range(good):
        stack.put(f"{prefix}/{index:03d}.png", tiny_png(index))
    for index in range(bad):
        stack.put(f"{prefix}/bad-{index}.png", b"\x89PNG\r\n\x1a\n but not really a PNG")


def first_line_run(stdout: str) -> str:
    first = stdout.splitlines()[0]
    assert first.startswith("run "), stdout
    return first.split()[1]


def show(stack: Stack, run_id: str) -> dict[str, Any]:
    done = gvw("runs", "show", run_id, "--json", env=stack.env)
    assert done.returncode == 0, done.stderr
    return dict(json.loads(done.stdout))


def read_json(stack: Stack, uri: str) -> Any:
    key = uri.removeprefix("s3://results/")
    return json.loads(stack.s3.get_object(Bucket="results", Key=key)["Body"].read())


@pytest.fixture
def client(stack: Stack, monkeypatch: pytest.MonkeyPatch) -> VisionClient:
    """A producer's client of the stack (boto3 reads the S3 endpoint from the environment)."""
    for name in ("AWS_ENDPOINT_URL_S3", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY",
                 "AWS_DEFAULT_REGION"):  # fmt: skip
        monkeypatch.setenv(name, stack.env[name])
    settings = Settings(
        celery_broker_url=stack.env["CELERY_BROKER_URL"],
        gvw_redis_url=stack.env["GVW_REDIS_URL"],
        gvw_results_uri=stack.env["GVW_RESULTS_URI"],
    )
    return VisionClient(settings=settings, stores=StoreRouter())


def test_a_prefix_is_one_run_counted_summarised_and_retried(
    stack: Stack, client: VisionClient
) -> None:
    prefix = f"run-{uuid.uuid4().hex[:8]}"
    put_prefix(stack, prefix, good=24, bad=3)
    calls_before = stack.model_calls()

    first = gvw(
        "enqueue-prefix", f"s3://inbox/{prefix}/", "--task", "caption",
        "--run-name", "catalogue", "--wait", "--timeout", "120",
        env=stack.env, timeout_s=180,
    )  # fmt: skip
    assert first.returncode == 1, first.stderr  # three jobs failed
    run_id = first_line_run(first.stdout)
    assert run_id.startswith("catalogue-")

    # the workers' last end finished the run: its summary says so, by error code
    wait_until(lambda: show(stack, run_id)["state"] == "finished", timeout_s=30, what="the end")
    summary = show(stack, run_id)
    assert summary["members"] == 27 and summary["sealed"]
    assert summary["counts"]["succeeded"] == 24 and summary["counts"]["failed"] == 3
    assert summary["failed_by_code"] == {"invalid_image": 3}
    assert summary["counts"]["queued"] == summary["counts"]["running"] == 0
    assert summary["spent_usd"] > 0 and summary["eta_s"] == 0
    stored = read_json(stack, summary["summary_uri"])
    assert stored["state"] == "finished" and stored["counts"] == summary["counts"]

    # the definition and the members are in storage, beside the results
    definition = read_json(stack, f"s3://results/vision/_runs/{run_id}/run.json")
    assert definition["source"] == {
        "kind": "prefix",
        "prefix": f"s3://inbox/{prefix}/",
        "suffixes": [".jpg", ".jpeg", ".png", ".webp", ".heic", ".heif", ".gif", ".bmp", ".tif",
                     ".tiff"],
    }  # fmt: skip
    assert definition["template"] == {"task": "caption"} and definition["name"] == "catalogue"
    members_key = f"vision/_runs/{run_id}/members/00000.jsonl"
    members = stack.s3.get_object(Bucket="results", Key=members_key)["Body"].read().splitlines()
    assert len(members) == 27
    # every record says which run it was counted in
    some = json.loads(members[0])
    assert stack.record(some["job_id"])["run"] == run_id

    # a producer reads the same
    status = client.run_status(run_id)
    assert status is not None and status.counts == summary["counts"]
    listed = gvw("runs", "list", env=stack.env)
    assert run_id in listed.stdout

    # a rerun over the same prefix is a new run of jobs done already: finished at once,
    # with what each ended as
    rerun = gvw("enqueue-prefix", f"s3://inbox/{prefix}/", "--task", "caption", env=stack.env)
    assert rerun.returncode == 0, rerun.stderr
    second = first_line_run(rerun.stdout)
    assert second != run_id and "submitted 0, skipped as done 27" in rerun.stdout
    later = show(stack, second)
    assert later["state"] == "finished" and later["counts"]["succeeded"] == 24
    assert later["failed_by_code"] == {"invalid_image": 3} and later["spent_usd"] == 0

    # the bad objects are fixed; a retry sends exactly the failed jobs again
    for index in range(3):
        stack.put(f"{prefix}/bad-{index}.png", tiny_png(100 + index))
    calls_after_run = stack.model_calls()
    assert calls_after_run - calls_before == 24
    retry = gvw("runs", "retry", run_id, "--code", "invalid_image", env=stack.env)
    assert retry.returncode == 0, retry.stderr
    assert "sent again 3 failed jobs" in retry.stdout
    wait_until(
        lambda: show(stack, run_id)["counts"]["succeeded"] == 27,
        timeout_s=60,
        what="the retried jobs",
    )
    again = show(stack, run_id)
    assert again["state"] == "finished" and again["failed_by_code"] == {}
    assert stack.model_calls() - calls_after_run == 3  # nothing already paid is paid again


def test_a_producer_names_a_run_on_its_own_jobs_and_seals_it(
    stack: Stack, client: VisionClient
) -> None:
    run_id = f"svc-{uuid.uuid4().hex[:8]}"
    job_ids = []
    for index in range(4):
        uri = stack.put(f"own-{run_id}/{index}.png", tiny_png(index))
        job_ids.append(client.submit({"task": "caption", "images": [uri], "run": run_id}))
    for job_id in job_ids:
        stack.record(job_id)
    status = client.run_status(run_id)
    assert status is not None and status.counts["succeeded"] == 4
    assert status.state == "running" and not status.sealed  # more may come
    sealed = client.seal_run(run_id)
    assert sealed is not None and sealed.state == "finished" and sealed.members == 4
    assert sealed.summary_uri is not None
    assert read_json(stack, sealed.summary_uri)["state"] == "finished"


def test_an_unknown_run_is_a_clear_error(stack: Stack) -> None:
    done = gvw("runs", "show", "no-such-run", env=stack.env)
    assert done.returncode == 1
    assert "no run no-such-run under s3://results/vision" in done.stderr


def test_gvw_runs_seal_finishes_a_run_whose_jobs_have_ended(
    stack: Stack, client: VisionClient
) -> None:
    run_id = f"line-cams-{uuid.uuid4().hex[:8]}"  # as a bridge rule names a day's run
    uri = stack.put(f"cams-{run_id}/0.png", tiny_png(7))
    stack.record(client.submit({"task": "caption", "images": [uri], "run": run_id}))
    assert show(stack, run_id)["state"] == "running"
    sealed = gvw("runs", "seal", run_id, env=stack.env)
    assert sealed.returncode == 0, sealed.stderr
    assert f"run {run_id}: sealed, finished" in sealed.stdout
    assert gvw("runs", "seal", "nobody-knows", env=stack.env).returncode == 1


def test_counts_a_redis_lost_are_made_again_from_storage(stack: Stack) -> None:
    prefix = f"recount-{uuid.uuid4().hex[:8]}"
    put_prefix(stack, prefix, good=5, bad=1)
    done = gvw(
        "enqueue-prefix", f"s3://inbox/{prefix}/", "--task", "caption", "--wait",
        env=stack.env, timeout_s=120,
    )  # fmt: skip
    run_id = first_line_run(done.stdout)
    wait_until(lambda: show(stack, run_id)["state"] == "finished", timeout_s=30, what="the end")
    before = show(stack, run_id)
    fleet = stack.redis.client(db=1)
    fleet.delete(*fleet.keys(f"gvw:run:{run_id}:*"))  # the fleet's Redis lost the run

    lost = show(stack, run_id)
    assert lost["source"] == "storage" and lost["counts"] == before["counts"]
    again = gvw("runs", "show", run_id, "--recount", "--json", env=stack.env)
    assert again.returncode == 0, again.stderr
    recounted = json.loads(again.stdout)
    assert recounted["source"] == "fleet" and recounted["state"] == "finished"
    assert recounted["members"] == 6 and recounted["counts"] == before["counts"]
    assert recounted["failed_by_code"] == {"invalid_image": 1}
    assert abs(recounted["spent_usd"] - before["spent_usd"]) < 1e-6
