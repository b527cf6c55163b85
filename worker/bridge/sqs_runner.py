"""`gvw bridge sqs`: long-poll an SQS queue of S3 notifications and enqueue their jobs.

A message is deleted only once every job it yields is on the broker. Anything else
leaves it in the queue: it becomes visible again after the queue's visibility timeout
and, after the redrive policy's maxReceiveCount, moves to the dead-letter queue. That is
also where undecodable messages end: they are not this bridge's to destroy, and a person
can read them there. Configure a redrive policy on the queue (docs/bridge.md).

Stopping (SIGTERM, SIGINT, or the `stop` event) takes effect between batches: the batch in
hand is finished and acknowledged first, so a stop never strands half a batch. A receive
in progress ends within `wait_s`.
"""

from __future__ import annotations

import logging
import re
import threading
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from worker.bridge.dispatch import Dispatcher
from worker.bridge.notifications import UndecodableNotification

log = logging.getLogger("worker.bridge.sqs")

MAX_MESSAGES_PER_RECEIVE = 10  # SQS's own limit
MAX_WAIT_S = 20  # SQS's longest long poll
BACKOFF_FIRST_S = 1.0
BACKOFF_MAX_S = 30.0
_AWS_HOST = re.compile(r"(^|\.)amazonaws\.com(\.cn)?$")
_AWS_QUEUE_HOST = re.compile(r"^sqs\.([a-z0-9-]+)\.amazonaws\.com(\.cn)?$")


@dataclass
class BatchReport:
    received: int = 0
    deleted: int = 0
    failed: int = 0  # a job could not be enqueued: left for redelivery
    undecodable: int = 0  # left for the dead-letter queue
    delete_errors: int = 0  # enqueued but not deleted: will come again, deduplicated by id


@dataclass
class RunReport(BatchReport):
    batches: int = 0
    receive_errors: int = 0

    def add(self, batch: BatchReport) -> None:
        self.batches += 1
        self.received += batch.received
        self.deleted += batch.deleted
        self.failed += batch.failed
        self.undecodable += batch.undecodable
        self.delete_errors += batch.delete_errors

    @property
    def ok(self) -> bool:
        """Nothing that needs a person: every job sent, SQS reachable throughout."""
        return self.failed == 0 and self.receive_errors == 0

    def as_dict(self) -> dict[str, int]:
        """Message counts; named apart from the dispatcher's counts of notifications and
        jobs (`Tally`), so the two can share one summary line."""
        return {
            "batches": self.batches,
            "received": self.received,
            "deleted": self.deleted,
            "kept": self.failed + self.undecodable,  # back after the visibility timeout
            "receive_errors": self.receive_errors,
            "delete_errors": self.delete_errors,
        }


class SqsRunner:
    def __init__(
        self,
        client: Any,
        queue_url: str,
        dispatcher: Dispatcher,
        *,
        max_messages: int = MAX_MESSAGES_PER_RECEIVE,
        wait_s: int = MAX_WAIT_S,
    ) -> None:
        if not 1 <= max_messages <= MAX_MESSAGES_PER_RECEIVE:
            raise ValueError(f"max_messages must be 1 to {MAX_MESSAGES_PER_RECEIVE}")
        if not 0 <= wait_s <= MAX_WAIT_S:
            raise ValueError(f"wait_s must be 0 to {MAX_WAIT_S}")
        self.client = client
        self.queue_url = queue_url
        self.dispatcher = dispatcher
        self.max_messages = max_messages
        self.wait_s = wait_s

    def run(
        self, *, stop: threading.Event, once: bool = False, max_batches: int | None = None
    ) -> RunReport:
        """Receive and handle batches until `stop` is set. With `once`: until the queue
        answers empty, or at the first trouble (for cron and tests)."""
        report = RunReport()
        delay_s = BACKOFF_FIRST_S
        log.info("polling %s", self.queue_url, extra={"once": once, "wait_s": self.wait_s})
        while not stop.is_set():
            if max_batches is not None and report.batches >= max_batches:
                break
            try:
                batch = self.process_batch()
            except Exception as exc:  # botocore errors, network: back off, never crash
                report.receive_errors += 1
                log.error("receive from %s failed: %s", self.queue_url, exc)
                if once:
                    break
                stop.wait(delay_s)
                delay_s = min(delay_s * 2, BACKOFF_MAX_S)
                continue
            report.add(batch)
            if once and (batch.received == 0 or batch.failed):
                break
            if batch.failed:
                # the broker is failing: give it time instead of spinning on the next batch
                stop.wait(delay_s)
                delay_s = min(delay_s * 2, BACKOFF_MAX_S)
            else:
                delay_s = BACKOFF_FIRST_S
        return report

    def process_batch(self) -> BatchReport:
        response = self.client.receive_message(
            QueueUrl=self.queue_url,
            MaxNumberOfMessages=self.max_messages,
            WaitTimeSeconds=self.wait_s,
            MessageSystemAttributeNames=["ApproximateReceiveCount"],
        )
        messages = response.get("Messages", [])
        batch = BatchReport(received=len(messages))
        done: list[Mapping[str, Any]] = []
        for message in messages:
            context = {
                "message_id": message.get("MessageId"),
                "receive_count": message.get("Attributes", {}).get("ApproximateReceiveCount"),
            }
            try:
                handled = self.dispatcher.handle(message.get("Body", ""))
            except UndecodableNotification:
                batch.undecodable += 1
                log.error("undecodable message left for the dead-letter queue", extra=context)
                continue
            except Exception:  # a bug must not stop the bridge: the message comes again
                batch.failed += 1
                log.exception("handling a message failed", extra=context)
                continue
            if handled.ok:
                done.append(message)
            else:
                batch.failed += 1
        self._delete(done, batch)
        return batch

    def _delete(self, messages: list[Mapping[str, Any]], batch: BatchReport) -> None:
        if not messages:
            return
        entries = [
            {"Id": str(index), "ReceiptHandle": message["ReceiptHandle"]}
            for index, message in enumerate(messages)
        ]
        try:
            response = self.client.delete_message_batch(QueueUrl=self.queue_url, Entries=entries)
        except Exception as exc:
            batch.delete_errors += len(entries)
            log.warning("deleting %d handled messages failed: %s", len(entries), exc)
            return
        failed = response.get("Failed", [])
        batch.deleted += len(entries) - len(failed)
        batch.delete_errors += len(failed)
        for entry in failed:
            log.warning("deleting a handled message failed: %s", entry.get("Message"))


# --- the SQS client ---------------------------------------------------------------------------


def sqs_client(queue_url: str, *, wait_s: int, environ: Mapping[str, str]) -> Any:
    """A boto3 SQS client for `queue_url`: boto3's own configuration (AWS_* variables, the
    instance role), plus the endpoint and region the queue URL implies where those say
    nothing (moto, ElasticMQ and LocalStack queue URLs name their own host)."""
    import boto3
    from botocore.config import Config

    config = Config(
        connect_timeout=5,
        read_timeout=wait_s + 10,  # a long poll is not a stalled connection
        retries={"mode": "standard", "max_attempts": 3},
    )
    return boto3.session.Session().client(
        "sqs",
        endpoint_url=endpoint_for_queue_url(queue_url, environ),
        region_name=region_for_queue_url(queue_url, environ),
        config=config,
    )


def endpoint_for_queue_url(queue_url: str, env: Mapping[str, str]) -> str | None:
    if env.get("AWS_ENDPOINT_URL_SQS") or env.get("AWS_ENDPOINT_URL"):
        return None  # boto3 reads them itself
    parts = urlsplit(queue_url)
    if not parts.scheme or not parts.hostname:
        raise ValueError(f"not a queue URL: {queue_url!r}")
    if _AWS_HOST.search(parts.hostname):
        return None
    return f"{parts.scheme}://{parts.netloc}"


def region_for_queue_url(queue_url: str, env: Mapping[str, str]) -> str | None:
    if env.get("AWS_REGION") or env.get("AWS_DEFAULT_REGION"):
        return None
    match = _AWS_QUEUE_HOST.match(urlsplit(queue_url).hostname or "")
    return match.group(1) if match else None
