"""`bridge sqs` against moto's server: a real bucket notification feeds a real SQS queue.

moto (as a server) delivers S3 events for `put_bucket_notification_configuration` with
`QueueConfigurations`, prefix filter included, in the sparse shape of its own records;
it also sends the `s3:TestEvent` when the configuration is set. The bridge runs as a
subprocess; the jobs run on the stack's real celery worker against the Gemini emulator.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import boto3
import pytest

from tests.harness import REPO_ROOT, Stack, free_port, list_job_keys, wait_until
from worker.bridge.job_ids import bridge_job_id
from worker.bridge.notifications import ObjectEvent
from worker.bridge.rules import Rule, load_rules
from worker.emulator.scenes import make_scene

pytestmark = pytest.mark.integration

# `python -m worker.cli bridge` once worker/cli/main.py mounts the bridge; the same code either way
BRIDGE = [sys.executable, "-m", "worker.cli", "bridge"]


@dataclass
class Notified:
    """A queue receiving inbox's notifications for keys under `prefix`."""

    sqs: Any
    queue_url: str
    prefix: str
    rules_path: Path
    rule: Rule

    def in_queue(self) -> int:
        attrs = self.sqs.get_queue_attributes(
            QueueUrl=self.queue_url,
            AttributeNames=["ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible"],
        )["Attributes"]
        return int(attrs["ApproximateNumberOfMessages"]) + int(
            attrs["ApproximateNumberOfMessagesNotVisible"]
        )


def sqs_client(stack: Stack) -> Any:
    return boto3.client(
        "sqs",
        endpoint_url=stack.moto.endpoint,
        region_name="us-east-1",
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
    )


@pytest.fixture
def notified(stack: Stack, tmp_path: Path) -> Iterator[Notified]:
    sqs = sqs_client(stack)
    name = f"bridge-{uuid.uuid4().hex[:12]}"
    # a short visibility timeout: a message left in the queue is back within the test
    queue_url = sqs.create_queue(QueueName=name, Attributes={"VisibilityTimeout": "2"})["QueueUrl"]
    arn = sqs.get_queue_attributes(QueueUrl=queue_url, AttributeNames=["QueueArn"])["Attributes"][
        "QueueArn"
    ]
    prefix = f"{name}/"
    # Only this test's prefix notifies: other tests' objects in inbox stay out of the queue.
    stack.s3.put_bucket_notification_configuration(
        Bucket="inbox",
        NotificationConfiguration={
            "QueueConfigurations": [
                {
                    "QueueArn": arn,
                    "Events": ["s3:ObjectCreated:*", "s3:ObjectRemoved:*"],
                    "Filter": {"Key": {"FilterRules": [{"Name": "prefix", "Value": prefix}]}},
                }
            ]
        },
    )
    rules_path = tmp_path / "rules.json"
    rules_path.write_text(
        json.dumps(
            {
                "rules": [
                    {
                        "name": "bridge-captions",
                        "bucket": "inbox",
                        "prefix": prefix,
                        "suffix": [".png"],
                        "job": {"task": "caption"},
                    }
                ]
            }
        )
    )
    (rule,) = load_rules(str(rules_path))
    try:
        yield Notified(sqs, queue_url, prefix, rules_path, rule)
    finally:
        stack.s3.put_bucket_notification_configuration(Bucket="inbox", NotificationConfiguration={})
        sqs.delete_queue(QueueUrl=queue_url)


def run_once(
    stack: Stack, notified: Notified, *, env: dict[str, str] | None = None
) -> tuple[subprocess.CompletedProcess[str], dict[str, Any]]:
    done = subprocess.run(
        [
            *BRIDGE,
            "sqs",
            "--queue-url",
            notified.queue_url,
            "--rules",
            str(notified.rules_path),
            "--once",
            "--wait-s",
            "1",
        ],
        env=env or stack.env,
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        stdin=subprocess.DEVNULL,
    )
    lines = done.stdout.strip().splitlines()
    summary = json.loads(lines[-1]) if lines else {}
    return done, summary


def put_png(stack: Stack, key: str, seed: int = 0) -> str:
    """Put an image; return its ETag as S3 notifications carry it (no quotes)."""
    stack.put(key, make_scene(320, 240, shapes=["red circle"], seed=seed).png_bytes())
    return str(stack.s3.head_object(Bucket="inbox", Key=key)["ETag"]).strip('"')


def expected_id(notified: Notified, key: str, etag: str) -> str:
    return bridge_job_id(ObjectEvent("inbox", key, etag=etag), notified.rule)


def test_objects_put_in_the_bucket_get_results_with_their_keys_intact(
    stack: Stack, notified: Notified
) -> None:
    names = [
        "a photo of a circle.png",
        "c++/x+y=z.png",
        "ünïcödé/日本 写真.png",
        "deep/er/and/deeper/100% done.png",
    ]
    keys = [notified.prefix + name for name in names]
    ids = {
        key: expected_id(notified, key, put_png(stack, key, seed=i)) for i, key in enumerate(keys)
    }
    stack.put(notified.prefix + "notes.txt", b"not an image")  # no rule: skipped

    done, summary = run_once(stack, notified)

    assert done.returncode == 0, done.stderr[-3000:]
    # the s3:TestEvent moto sent when the notification was configured is ignored
    assert summary["enqueued"] == 4, summary
    assert summary["ignored"] == 1 and summary["skipped"] == 1, summary
    assert summary["undecodable"] == 0 and summary["failed"] == 0, summary
    for key, job_id in ids.items():
        record = stack.record(job_id)
        assert record["status"] == "succeeded", record
        assert record["images"][0]["uri"] == f"s3://inbox/{key}"
    assert notified.in_queue() == 0

    # deleting an object sends ObjectRemoved:Delete: acknowledged, nothing enqueued
    stack.s3.delete_object(Bucket="inbox", Key=keys[0])
    done, summary = run_once(stack, notified)
    assert done.returncode == 0, done.stderr[-3000:]
    assert (summary["enqueued"], summary["ignored"], summary["received"]) == (0, 1, 1), summary
    assert notified.in_queue() == 0


def test_the_same_notification_three_times_gives_one_result_and_one_model_call(
    stack: Stack, notified: Notified
) -> None:
    key = f"{notified.prefix}dup/one.png"
    job_id = expected_id(notified, key, put_png(stack, key))
    # take moto's own message body (leaving it in the queue) and deliver it twice more
    message = next(
        m
        for m in notified.sqs.receive_message(
            QueueUrl=notified.queue_url, MaxNumberOfMessages=10, VisibilityTimeout=0
        )["Messages"]
        if "Records" in json.loads(m["Body"])
    )
    for _ in range(2):
        notified.sqs.send_message(QueueUrl=notified.queue_url, MessageBody=message["Body"])
    calls_before = stack.model_calls()

    done, summary = run_once(stack, notified)

    assert done.returncode == 0, done.stderr[-3000:]
    assert summary["enqueued"] == 3, summary  # three sends of one job id
    assert stack.record(job_id)["status"] == "succeeded"
    stack.wait_until_settled()  # the duplicates came back (JobBusy) and found the result
    assert stack.model_calls() - calls_before == 1
    assert [k for k in list_job_keys(stack.s3, job_id) if k.endswith("result.json")] == [
        f"vision/{job_id}/result.json"
    ]


def test_a_message_whose_job_could_not_be_enqueued_is_kept_and_handled_later(
    stack: Stack, notified: Notified
) -> None:
    key = f"{notified.prefix}later.png"
    job_id = expected_id(notified, key, put_png(stack, key))
    dead_broker = {**stack.env, "CELERY_BROKER_URL": f"redis://127.0.0.1:{free_port()}/0"}

    done, summary = run_once(stack, notified, env=dead_broker)

    assert done.returncode == 1
    assert "not enqueued" in done.stderr
    assert summary["failed"] == 1 and summary["kept"] == 1, summary
    assert summary["deleted"] == 1, summary  # the test event went
    assert notified.in_queue() == 1  # in flight: visible again after the visibility timeout

    wait_until(
        lambda: run_once(stack, notified)[1].get("enqueued") == 1,
        timeout_s=20,
        what="the kept message to come back and be enqueued",
        interval_s=0.5,
    )
    assert stack.record(job_id)["status"] == "succeeded"
    assert notified.in_queue() == 0


def test_an_undecodable_message_is_left_for_the_dead_letter_queue(
    stack: Stack, notified: Notified
) -> None:
    notified.sqs.send_message(QueueUrl=notified.queue_url, MessageBody="<not a notification/>")

    done, summary = run_once(stack, notified)

    assert done.returncode == 0, done.stderr[-3000:]
    assert summary["undecodable"] == 1 and summary["kept"] == 1, summary
    assert summary["deleted"] == 1, summary  # the test event
    assert notified.in_queue() == 1
    assert "undecodable" in done.stderr


def test_sigterm_stops_the_poller_cleanly(stack: Stack, notified: Notified, tmp_path: Path) -> None:
    log_path = tmp_path / "bridge.log"
    with log_path.open("w") as log_file:
        proc = subprocess.Popen(
            [
                *BRIDGE,
                "sqs",
                "--queue-url",
                notified.queue_url,
                "--rules",
                str(notified.rules_path),
                "--wait-s",
                "1",
            ],
            env=stack.env,
            cwd=REPO_ROOT,
            stdout=subprocess.PIPE,
            stderr=log_file,
            text=True,
            stdin=subprocess.DEVNULL,
        )
    try:
        wait_until(lambda: "polling" in log_path.read_text(), timeout_s=30, what="the poller")
        key = f"{notified.prefix}while-running.png"
        job_id = expected_id(notified, key, put_png(stack, key))
        assert stack.record(job_id)["status"] == "succeeded"
        proc.send_signal(signal.SIGTERM)
        stdout, _ = proc.communicate(timeout=15)
    finally:
        if proc.poll() is None:
            os.kill(proc.pid, signal.SIGKILL)
            proc.communicate(timeout=10)
    assert proc.returncode == 0, log_path.read_text()[-3000:]
    summary = json.loads(stdout.strip().splitlines()[-1])
    assert summary["enqueued"] == 1 and summary["failed"] == 0, summary
    assert notified.in_queue() == 0
