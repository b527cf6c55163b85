"""The Lambda handler with the S3 event as Lambda receives it, against the real stack."""

from __future__ import annotations

import json
import uuid
from typing import Any
from urllib.parse import quote_plus

import pytest

from tests.harness import Stack, free_port
from worker.bridge.lambda_handler import EnqueueFailed, handler
from worker.emulator.scenes import make_scene

pytestmark = pytest.mark.integration

RULES = {"rules": [{"name": "lambda-detect", "suffix": [".png"], "job": {"task": "detect"}}]}


@pytest.fixture
def lambda_env(stack: Stack, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CELERY_BROKER_URL", stack.env["CELERY_BROKER_URL"])
    monkeypatch.setenv("GVW_BRIDGE_RULES", json.dumps(RULES))
    monkeypatch.setenv("GVW_RESULTS_URI", stack.env["GVW_RESULTS_URI"])


def s3_event(stack: Stack, key: str) -> dict[str, Any]:
    """S3 -> Lambda: the notification itself, keys encoded as AWS does ("/" kept)."""
    stack.put(key, make_scene(320, 240, shapes=["green triangle"]).png_bytes())
    head = stack.s3.head_object(Bucket="inbox", Key=key)
    return {
        "Records": [
            {
                "eventVersion": "2.1",
                "eventSource": "aws:s3",
                "awsRegion": "us-east-1",
                "eventTime": "2024-05-06T07:08:09.123Z",
                "eventName": "ObjectCreated:Put",
                "userIdentity": {"principalId": "AWS:AIDAJDPLRKLG7UEXAMPLE"},
                "s3": {
                    "s3SchemaVersion": "1.0",
                    "configurationId": "to-lambda",
                    "bucket": {"name": "inbox", "arn": "arn:aws:s3:::inbox"},
                    "object": {
                        "key": quote_plus(key, safe="/"),
                        "size": head["ContentLength"],
                        "eTag": str(head["ETag"]).strip('"'),
                        "sequencer": "0055AED6DCD90281E5",
                    },
                },
            }
        ]
    }


@pytest.mark.usefixtures("lambda_env")
def test_an_s3_event_enqueues_and_returns_a_summary(stack: Stack) -> None:
    key = f"lambda-{uuid.uuid4().hex[:8]}/Ünïcode +plus/x y.png"
    event = s3_event(stack, key)
    summary = handler(event, None)
    (job_id,) = summary["enqueued"]
    assert summary["failed"] is None and summary["shape"] == "s3"
    record = stack.record(job_id)
    assert record["status"] == "succeeded"
    assert record["images"][0]["uri"] == f"s3://inbox/{key}"
    # Lambda delivers asynchronous events at least once: the same event, the same job
    assert handler(event, None)["enqueued"] == [job_id]


@pytest.mark.usefixtures("lambda_env")
def test_an_sqs_batch_reports_only_its_failed_records(stack: Stack) -> None:
    good = s3_event(stack, f"lambda-{uuid.uuid4().hex[:8]}/a.png")
    event = {
        "Records": [
            {"messageId": "m-good", "body": json.dumps(good), "eventSource": "aws:sqs"},
            {"messageId": "m-bad", "body": "<garbage/>", "eventSource": "aws:sqs"},
        ]
    }
    answer = handler(event, None)
    assert answer["batchItemFailures"] == [{"itemIdentifier": "m-bad"}]
    (job_id,) = answer["enqueued"]
    assert stack.record(job_id)["status"] == "succeeded"


@pytest.mark.usefixtures("lambda_env")
def test_an_unreachable_broker_raises_so_lambda_retries(
    stack: Stack, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CELERY_BROKER_URL", f"redis://127.0.0.1:{free_port()}/0")
    with pytest.raises(EnqueueFailed):
        handler(s3_event(stack, f"lambda-{uuid.uuid4().hex[:8]}/b.png"), None)


def test_a_missing_broker_url_is_a_configuration_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("CELERY_BROKER_URL", raising=False)
    with pytest.raises(RuntimeError, match="CELERY_BROKER_URL"):
        handler({"Records": []}, None)
