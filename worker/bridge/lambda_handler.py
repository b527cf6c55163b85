"""AWS Lambda entry point: `worker.bridge.lambda_handler.handler`.

Configuration (environment of the function):
    CELERY_BROKER_URL   the broker the workers read (required: Lambda has no localhost Redis)
    GVW_BRIDGE_RULES    a rules file path in the package, or the rules as inline JSON
                        (absent: caption every image)
    GVW_RESULTS_URI     the workers' default results location, never analysed itself

Triggers:
- **S3 -> Lambda** (asynchronous): the event is the notification. A job that cannot be
  enqueued raises, so Lambda retries the event (twice by default) and then hands it to
  the function's on-failure destination or DLQ.
- **SQS -> Lambda**: each record is handled on its own; records whose jobs could not all
  be enqueued (or that are undecodable) are returned in `batchItemFailures`. Enable
  ReportBatchItemFailures on the event source mapping, or a failure retries the whole batch.
- **EventBridge or SNS -> Lambda**: as S3 -> Lambda.

The dispatcher (rules, Celery producer) is built on the first call and kept while the
execution environment is warm; nothing is done at import time.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from typing import Any

from worker.bridge.dispatch import CeleryJobSender, Dispatcher
from worker.bridge.notifications import UndecodableNotification
from worker.bridge.rules import DEFAULT_RULES, load_rules

log = logging.getLogger("worker.bridge.lambda")

RULES_ENV = "GVW_BRIDGE_RULES"

_cached: tuple[tuple[str, str, str], Dispatcher] | None = None


class EnqueueFailed(RuntimeError):
    """Raised so that Lambda retries the event: a job of it did not reach the broker."""


def handler(event: Mapping[str, Any], context: Any = None) -> dict[str, Any]:
    dispatcher = _dispatcher()
    if _is_sqs_batch(event):
        return _handle_sqs_batch(event, dispatcher)
    handled = dispatcher.handle(event)  # UndecodableNotification propagates: Lambda retries
    if not handled.ok:
        raise EnqueueFailed(handled.failed)
    return handled.summary()


def _is_sqs_batch(event: Mapping[str, Any]) -> bool:
    records = event.get("Records")
    return (
        isinstance(records, list)
        and bool(records)
        and all(isinstance(r, Mapping) and r.get("eventSource") == "aws:sqs" for r in records)
    )


def _handle_sqs_batch(event: Mapping[str, Any], dispatcher: Dispatcher) -> dict[str, Any]:
    failures: list[dict[str, str]] = []
    enqueued: list[str] = []
    for record in event["Records"]:
        try:
            handled = dispatcher.handle(record.get("body", ""))
        except UndecodableNotification:
            # reported as failed: after maxReceiveCount the queue moves it to its DLQ
            failures.append({"itemIdentifier": str(record.get("messageId"))})
            continue
        if handled.ok:
            enqueued.extend(handled.enqueued)
        else:
            failures.append({"itemIdentifier": str(record.get("messageId"))})
    return {"enqueued": enqueued, "batchItemFailures": failures}


def _dispatcher() -> Dispatcher:
    """One dispatcher per warm environment, rebuilt if the configuration changed."""
    global _cached
    broker_url = os.environ.get("CELERY_BROKER_URL", "")
    if not broker_url:
        raise RuntimeError("CELERY_BROKER_URL is not set: the bridge needs the workers' broker")
    key = (broker_url, os.environ.get(RULES_ENV, ""), os.environ.get("GVW_RESULTS_URI", ""))
    if _cached is None or _cached[0] != key:
        rules = load_rules(key[1]) if key[1] else DEFAULT_RULES
        sender = CeleryJobSender(broker_url)
        _cached = (key, Dispatcher(rules, sender, results_uri=key[2] or None))
        log.info("bridge ready: %d rules", len(rules))
    return _cached[1]
