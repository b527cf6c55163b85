"""`gvw enqueue-prefix` over a whole prefix, and a rerun that skips what is done."""

from __future__ import annotations

import io
import json
import re
import uuid

import pytest
from PIL import Image

from tests.harness import Stack, list_job_keys
from tests.integration.test_cli import gvw
from worker.bulk import deterministic_job_id

pytestmark = pytest.mark.integration


def tiny_png(index: int) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (48, 32), ((index * 37) % 256, 90, 200)).save(buffer, format="PNG")
    return buffer.getvalue()


def test_enqueue_prefix_over_200_objects_then_rerun_skips_them(stack: Stack) -> None:
    prefix = f"bulk-{uuid.uuid4().hex[:8]}"
    for index in range(200):
        stack.put(f"{prefix}/batch {index // 50}/img+{index:03d}.png", tiny_png(index))
    for index in range(5):
        stack.put(f"{prefix}/notes-{index}.txt", b"not an image")
    calls_before = stack.model_calls()

    first = gvw(
        "enqueue-prefix",
        f"s3://inbox/{prefix}/",
        "--task",
        "caption",
        "--suffix",
        ".png,.jpg",
        "--wait",
        "--timeout",
        "240",
        env=stack.env,
        timeout_s=300,
    )
    assert first.returncode == 0, first.stderr[-2000:]
    assert "listed 200, submitted 200, skipped as done 0" in first.stdout
    assert "succeeded 200, failed 0" in first.stdout
    assert stack.model_calls() - calls_before == 200

    second = gvw(
        "enqueue-prefix",
        f"s3://inbox/{prefix}/",
        "--task",
        "caption",
        "--suffix",
        ".png,.jpg",
        "--wait",
        env=stack.env,
        timeout_s=300,
    )
    assert second.returncode == 0, second.stderr[-2000:]
    assert "listed 200, submitted 0, skipped as done 200" in second.stdout
    assert stack.model_calls() - calls_before == 200  # nothing paid twice

    # other options are other jobs
    third = gvw(
        "enqueue-prefix",
        f"s3://inbox/{prefix}/batch 0/",
        "--task",
        "vqa",
        "--prompt",
        "What colour is it?",
        env=stack.env,
        timeout_s=300,
    )
    assert "listed 50, submitted 50" in third.stdout


def test_ids_are_deterministic_and_valid() -> None:
    from worker.bulk import deterministic_job_id
    from worker.jobs import JOB_ID_PATTERN

    template = {"task": "caption"}
    a = deterministic_job_id("s3://inbox/a b/ç+x.png", '"etag1"', template)
    assert a == deterministic_job_id("s3://inbox/a b/ç+x.png", '"etag1"', template)
    assert a != deterministic_job_id("s3://inbox/a b/ç+x.png", '"etag2"', template)
    assert a != deterministic_job_id("s3://inbox/a b/ç+x.png", '"etag1"', {"task": "detect"})
    assert re.match(JOB_ID_PATTERN, a)
    assert re.match(JOB_ID_PATTERN, deterministic_job_id("s3://inbox/" + "é" * 300, "e", template))


def test_a_dry_run_counts_and_prices_a_prefix_without_submitting(stack: Stack) -> None:
    prefix = f"dry-{uuid.uuid4().hex[:8]}"
    for index in range(30):
        buffer = io.BytesIO()
        # 960x540: 6 tiles of 258 tokens on 2.5 (the guide's example)
        Image.new("RGB", (960, 540), (index, 90, 200)).save(buffer, format="JPEG")
        stack.put(f"{prefix}/{index:03d}.jpg", buffer.getvalue())
    stack.put(f"{prefix}/readme.txt", b"not an image")

    dry = gvw(
        "enqueue-prefix",
        f"s3://inbox/{prefix}/",
        "--task",
        "caption",
        "--suffix",
        ".jpg",
        "--options",
        '{"thinking_budget": 0, "max_output_tokens": 200}',
        "--dry-run",
        "--sample",
        "10",
        env=stack.env,
        timeout_s=120,
    )
    assert dry.returncode == 0, dry.stderr[-2000:]
    assert "30 images" in dry.stdout and "nothing was submitted" in dry.stdout
    assert "1,548 image tokens a job, from the headers of 10 sampled objects" in dry.stdout
    # 30 x (1,548 + ~150 text) in, 30 x 200 out at gemini-2.5-flash ($0.30 / $2.50 per 1M)
    cost = re.search(r"cost: at most \$([\d.]+) interactive, \$([\d.]+) through", dry.stdout)
    assert cost is not None, dry.stdout
    interactive, batch = float(cost.group(1)), float(cost.group(2))
    assert interactive == pytest.approx(0.0303, abs=0.001)
    assert batch == pytest.approx(interactive / 2, abs=0.0001)
    # nothing of this prefix was sent: no message names it, queued or taken, and none of
    # the jobs a real run would send has a record
    broker = stack.redis.client()
    messages = broker.lrange("vision", 0, -1) + list(broker.hvals("unacked"))
    assert not [m for m in messages if prefix.encode() in m]
    template = {"task": "caption", "options": {"thinking_budget": 0, "max_output_tokens": 200}}
    for index in range(30):
        key = f"{prefix}/{index:03d}.jpg"
        etag = stack.s3.head_object(Bucket="inbox", Key=key)["ETag"]
        job_id = deterministic_job_id(f"s3://inbox/{key}", etag, template)
        assert not list_job_keys(stack.s3, job_id), job_id


def test_a_rerun_after_an_interruption_sends_only_what_is_missing(
    stack: Stack, monkeypatch: pytest.MonkeyPatch
) -> None:
    from worker.bulk import RedisSentLog, enqueue_prefix, run_key
    from worker.client import VisionClient
    from worker.settings import Settings
    from worker.storage import StoreRouter

    prefix = f"resume-{uuid.uuid4().hex[:8]}"
    for index in range(120):
        stack.put(f"{prefix}/{index:03d}.png", tiny_png(index))
    # a broker database no worker reads: what the runs send stays there to be counted
    settings = Settings(
        celery_broker_url=f"{stack.redis.url}/7",
        gvw_redis_url=f"{stack.redis.url}/1",
        gvw_results_uri="s3://results/vision",
    )
    stores = StoreRouter()
    monkeypatch.setenv("AWS_ENDPOINT_URL_S3", stack.env["AWS_ENDPOINT_URL_S3"])
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_DEFAULT_REGION"):
        monkeypatch.setenv(name, stack.env[name])
    template = {"task": "caption"}
    uri_prefix = f"s3://inbox/{prefix}/"
    sent = RedisSentLog(stack.redis.client(db=1), run_key(uri_prefix, template), ttl_s=3600)
    client = VisionClient(settings=settings, stores=stores)
    real_submit_many = client.submit_many
    groups = []

    def dies_after_one_group(jobs: list[dict[str, object]]) -> list[str]:
        if groups:
            raise KeyboardInterrupt  # Ctrl-C during the second group
        groups.append(len(jobs))
        return real_submit_many(jobs)

    monkeypatch.setattr(client, "submit_many", dies_after_one_group)
    with pytest.raises(KeyboardInterrupt):
        enqueue_prefix(client, stores.list_objects(uri_prefix), template, sent=sent, group_size=50)
    monkeypatch.setattr(client, "submit_many", real_submit_many)
    again = enqueue_prefix(
        client, stores.list_objects(uri_prefix), template, sent=sent, group_size=50
    )

    assert groups == [50]
    assert (again.listed, len(again.submitted), again.skipped_queued) == (120, 70, 50)
    broker = stack.redis.client(db=7)
    queued = [json.loads(m)["headers"]["id"] for m in broker.lrange("vision", 0, -1)]
    assert len(queued) == len(set(queued)) == 120  # every object once, none twice
    broker.delete("vision")
