"""Notifications in, jobs on the queue: decode, plan, validate, send; count and log each.

The runners (SQS, webhook, Lambda) differ only in how a notification arrives and how
they say "done" (delete the message, answer 200, return). They all ask the same question
of `Dispatcher.handle`: did every job of this notification reach the queue
(`Handled.ok`)? Only then is the notification acknowledged; otherwise it comes again, and
the jobs already sent are sent again under the same ids, which the worker deduplicates.

What is not a failure, and is acknowledged: ignored events (deletions, the test event),
objects no rule selects, and jobs `parse_job` refuses (logged and counted as dropped:
sending the notification again would not make them valid).
"""

from __future__ import annotations

import logging
import threading
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from tasks.errors import GvwError
from worker.bridge.notifications import Decoded, UndecodableNotification, decode_notification
from worker.bridge.planner import PlannedJob, plan_job, results_prefixes
from worker.bridge.rules import Rule

log = logging.getLogger("worker.bridge")


class JobSender(Protocol):
    """Puts one validated job on the queue; returns its id. Raises when it could not."""

    def send(self, job: dict[str, Any]) -> str: ...


class CeleryJobSender:
    """`vision.analyze` on queue `vision` through Celery's send_task (task id = job id)."""

    def __init__(self, broker_url: str | None = None) -> None:
        self._broker_url = broker_url  # None: CELERY_BROKER_URL through the worker's settings

    def send(self, job: dict[str, Any]) -> str:
        from worker.producers.producer import send_job

        return send_job(job, broker_url=self._broker_url)


@dataclass
class Handled:
    """What became of one notification."""

    shape: str
    enqueued: list[str] = field(default_factory=list)  # job ids
    skipped: list[str] = field(default_factory=list)  # objects no rule selects, results
    dropped: list[str] = field(default_factory=list)  # jobs parse_job refused
    ignored: list[str] = field(default_factory=list)  # deletions, test events, ...
    failed: str | None = None  # why a job could not be sent: acknowledge nothing

    @property
    def ok(self) -> bool:
        return self.failed is None

    def summary(self) -> dict[str, Any]:
        return {
            "shape": self.shape,
            "enqueued": list(self.enqueued),
            "skipped": len(self.skipped),
            "dropped": len(self.dropped),
            "ignored": len(self.ignored),
            "failed": self.failed,
        }


class Tally:
    """Counters for one bridge process, safe to update from the webhook's threads."""

    KEYS = ("notifications", "undecodable", "enqueued", "skipped", "dropped", "ignored", "failed")

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._counts: Counter[str] = Counter()

    def add(self, name: str, amount: int = 1) -> None:
        with self._lock:
            self._counts[name] += amount

    def snapshot(self) -> dict[str, int]:
        with self._lock:
            return {key: self._counts[key] for key in self.KEYS}


class Dispatcher:
    def __init__(
        self,
        rules: Sequence[Rule],
        sender: JobSender,
        *,
        results_uri: str | None = None,
        tally: Tally | None = None,
    ) -> None:
        self.rules = tuple(rules)
        self.sender = sender
        self.tally = tally or Tally()
        self._results_prefixes = results_prefixes(self.rules, results_uri)

    def handle(self, body: str | bytes | Mapping[str, Any]) -> Handled:
        """Decode one notification and send its jobs. Raises UndecodableNotification."""
        self.tally.add("notifications")
        try:
            decoded = decode_notification(body)
        except UndecodableNotification as exc:
            self.tally.add("undecodable")
            log.error("undecodable notification: %s", exc, extra={"body": _preview(body)})
            raise
        handled = self._send_all(decoded)
        self.tally.add("enqueued", len(handled.enqueued))
        self.tally.add("skipped", len(handled.skipped))
        self.tally.add("dropped", len(handled.dropped))
        self.tally.add("ignored", len(handled.ignored))
        self.tally.add("failed", 0 if handled.ok else 1)
        return handled

    def _send_all(self, decoded: Decoded) -> Handled:
        handled = Handled(decoded.shape, ignored=list(decoded.ignored))
        for reason in decoded.ignored:
            log.info("ignored: %s", reason, extra={"shape": decoded.shape})
        for event in decoded.events:
            plan = plan_job(event, self.rules, results_prefixes=self._results_prefixes)
            if not isinstance(plan, PlannedJob):
                handled.skipped.append(f"{event.uri}: {plan.reason}")
                log.info("skipped %s: %s", event.uri, plan.reason, extra={"uri": event.uri})
                continue
            context = {"job_id": plan.job_id, "uri": event.uri, "rule": plan.rule.name}
            if not self._valid(plan, context):
                handled.dropped.append(plan.job_id)
                continue
            try:
                self.sender.send(plan.job)
            except Exception as exc:  # any broker or network error: the notification comes again
                handled.failed = f"{type(exc).__name__}: {exc}"
                log.error("could not enqueue %s: %s", plan.job_id, handled.failed, extra=context)
                # the broker is most likely down: later jobs would fail the same way, slowly
                break
            handled.enqueued.append(plan.job_id)
            log.info("enqueued %s for %s", plan.job_id, event.uri, extra=context)
        return handled

    def _valid(self, plan: PlannedJob, context: dict[str, str]) -> bool:
        from worker.contract.jobs import parse_job

        try:
            parse_job(plan.job)
        except GvwError as exc:
            log.warning("dropped invalid job %s: %s", plan.job_id, exc.message, extra=context)
            return False
        return True


def _preview(body: Any, max_chars: int = 500) -> str:
    if isinstance(body, bytes | bytearray):
        body = bytes(body).decode("utf-8", "replace")
    return str(body)[:max_chars]
