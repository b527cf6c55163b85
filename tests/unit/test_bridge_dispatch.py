"""The dispatcher's contract with its runners: acknowledge only what reached the queue.

The sender is a port; these tests use a list-backed one (the broker itself is exercised in
tests/integration/test_bridge_*.py). Also here: the small pure helpers of the runners.
"""

from __future__ import annotations

import json
from typing import Any

import pytest

from worker.bridge.dispatch import Dispatcher, Tally
from worker.bridge.notifications import UndecodableNotification
from worker.bridge.rules import Rule
from worker.bridge.sqs_runner import endpoint_for_queue_url, region_for_queue_url
from worker.bridge.webhook import check_exposure, is_authorized


class ListSender:
    def __init__(self, *, fail_after: int | None = None) -> None:
        self.jobs: list[dict[str, Any]] = []
        self.fail_after = fail_after

    def send(self, job: dict[str, Any]) -> str:
        if self.fail_after is not None and len(self.jobs) >= self.fail_after:
            raise ConnectionError("broker unreachable")
        self.jobs.append(job)
        return str(job["job_id"])


def record(
    key: str, event_name: str = "ObjectCreated:Put", bucket: str = "inbox"
) -> dict[str, Any]:
    return {
        "eventName": event_name,
        "s3": {"bucket": {"name": bucket}, "object": {"key": key, "eTag": "e-" + key}},
    }


RULES = [
    Rule(name="pets", template={"task": "classify", "labels": ["cat", "dog"]}, suffixes=(".jpg",)),
    Rule(name="captions", template={"task": "caption"}, prefix="scans/"),
]


def test_every_job_sent_means_ok_with_counts() -> None:
    sender = ListSender()
    dispatcher = Dispatcher(RULES, sender)
    body = {
        "Records": [
            record("a.jpg"),
            record("b.jpg", "ObjectRemoved:Delete"),
            record("notes.txt"),
            record("scans/p 1.tif"),
        ]
    }
    handled = dispatcher.handle(json.dumps(body))
    assert handled.ok
    assert [job["images"] for job in sender.jobs] == [
        ["s3://inbox/a.jpg"],
        ["s3://inbox/scans/p 1.tif"],
    ]
    assert handled.enqueued == [job["job_id"] for job in sender.jobs]
    assert len(handled.ignored) == 1 and len(handled.skipped) == 1
    assert dispatcher.tally.snapshot() == {
        "notifications": 1,
        "undecodable": 0,
        "enqueued": 2,
        "skipped": 1,
        "dropped": 0,
        "ignored": 1,
        "failed": 0,
    }


def test_a_failed_send_makes_the_notification_not_ok() -> None:
    sender = ListSender(fail_after=1)
    dispatcher = Dispatcher(RULES, sender)
    handled = dispatcher.handle({"Records": [record("a.jpg"), record("b.jpg"), record("c.jpg")]})
    assert not handled.ok
    assert handled.failed == "ConnectionError: broker unreachable"
    assert len(handled.enqueued) == 1  # sent again, under the same id, on redelivery
    assert dispatcher.tally.snapshot()["failed"] == 1


def test_an_invalid_job_is_dropped_and_counted_not_failed() -> None:
    sender = ListSender()
    dispatcher = Dispatcher(RULES, sender)
    # a key so long that the image URI breaks the job schema's 2,048-character limit
    long_key = "scans/" + "x" * 2100 + ".tif"
    handled = dispatcher.handle({"Records": [record(long_key), record("b.jpg")]})
    assert handled.ok
    assert len(handled.dropped) == 1
    assert [job["images"] for job in sender.jobs] == [["s3://inbox/b.jpg"]]
    assert dispatcher.tally.snapshot()["dropped"] == 1


def test_undecodable_bodies_raise_and_are_counted() -> None:
    dispatcher = Dispatcher(RULES, ListSender())
    with pytest.raises(UndecodableNotification):
        dispatcher.handle("<xml/>")
    assert dispatcher.tally.snapshot()["undecodable"] == 1


def test_results_are_never_fed_back() -> None:
    sender = ListSender()
    rules = [Rule(name="all", template={"task": "caption", "output": "s3://inbox/out"})]
    dispatcher = Dispatcher(rules, sender, results_uri="s3://results/vision")
    handled = dispatcher.handle(
        {
            "Records": [
                record("out/s3-a-0123/overlay.jpg"),
                record("vision/x/result.json", bucket="results"),
                record("new.jpg"),
            ]
        }
    )
    assert [job["images"] for job in sender.jobs] == [["s3://inbox/new.jpg"]]
    assert len(handled.skipped) == 2


def test_duplicate_deliveries_send_the_same_id() -> None:
    sender = ListSender()
    dispatcher = Dispatcher(RULES, sender)
    body = json.dumps({"Records": [record("a.jpg")]})
    for _ in range(3):
        dispatcher.handle(body)
    assert len({job["job_id"] for job in sender.jobs}) == 1


def test_tally_is_shared_when_given() -> None:
    tally = Tally()
    Dispatcher(RULES, ListSender(), tally=tally).handle({"Records": [record("a.jpg")]})
    assert tally.snapshot()["enqueued"] == 1


@pytest.mark.parametrize(
    ("queue_url", "env", "endpoint", "region"),
    [
        pytest.param(
            "https://sqs.eu-west-1.amazonaws.com/123456789012/uploads",
            {},
            None,
            "eu-west-1",
            id="aws",
        ),
        pytest.param(
            "https://sqs.eu-west-1.amazonaws.com/123456789012/uploads",
            {"AWS_DEFAULT_REGION": "us-east-1"},
            None,
            None,
            id="aws-region-from-env",
        ),
        pytest.param(
            "https://sqs.cn-north-1.amazonaws.com.cn/123456789012/uploads",
            {},
            None,
            "cn-north-1",
            id="aws-china",
        ),
        pytest.param(
            "http://127.0.0.1:5000/123456789012/uploads",
            {"AWS_DEFAULT_REGION": "us-east-1"},
            "http://127.0.0.1:5000",
            None,
            id="moto",
        ),
        pytest.param(
            "http://localhost:4566/000000000000/uploads",
            {"AWS_ENDPOINT_URL_SQS": "http://localstack:4566"},
            None,
            None,
            id="endpoint-from-env-wins",
        ),
    ],
)
def test_sqs_endpoint_and_region_from_the_queue_url(
    queue_url: str, env: dict[str, str], endpoint: str | None, region: str | None
) -> None:
    assert endpoint_for_queue_url(queue_url, env) == endpoint
    assert region_for_queue_url(queue_url, env) == region


def test_a_queue_url_must_be_a_url() -> None:
    with pytest.raises(ValueError, match="not a queue URL"):
        endpoint_for_queue_url("uploads", {})


@pytest.mark.parametrize(
    ("header", "token", "ok"),
    [
        pytest.param(None, None, True, id="no-token-configured"),
        pytest.param("Bearer s3cret", "s3cret", True, id="right"),
        pytest.param("Bearer s3cret ", "s3cret", True, id="trailing-space"),
        pytest.param(None, "s3cret", False, id="missing"),
        pytest.param("Bearer s3cre", "s3cret", False, id="wrong"),
        pytest.param("s3cret", "s3cret", False, id="no-scheme"),
        pytest.param("Basic czNjcmV0", "s3cret", False, id="other-scheme"),
    ],
)
def test_webhook_token(header: str | None, token: str | None, ok: bool) -> None:
    assert is_authorized(header, token) is ok


def test_webhook_refuses_to_listen_beyond_loopback_without_a_token() -> None:
    for host in ("127.0.0.1", "::1", "localhost", "127.0.0.2"):
        check_exposure(host, None)
    check_exposure("0.0.0.0", "s3cret")
    for host in ("0.0.0.0", "", "10.0.0.5", "bridge.internal"):
        with pytest.raises(ValueError, match="GVW_BRIDGE_TOKEN"):
            check_exposure(host, None)
