"""The event: Standard Webhooks' recommended payload, with a stable id.

    {"id": "evt_...", "type": "job.completed", "timestamp": "2026-...Z",
     "data": {"job_id", "status", "record_uri", "cost_usd", "error_code", "run"}}

The id is the event's identity for every receiver (the ``webhook-id`` header, the Celery
task's id, an SQS/SNS message attribute, and ``id`` in the body): derived from the event's
type and what it is about, never random, so a redelivered job that finds its job committed
emits the same id again and the outbox keeps it once. A new event type (``run.completed``)
is a new ``EVENT_TYPES`` entry and a function like `job_completed` building its data.
"""

from __future__ import annotations

import hashlib
import json
from datetime import UTC, datetime
from typing import Any, Final, Literal

from pydantic import BaseModel, ConfigDict

from worker.contract.records import Outcome

JOB_COMPLETED: Final = "job.completed"
RUN_COMPLETED: Final = "run.completed"  # a run's end (worker/pipeline/ended.py)
EventType = Literal["job.completed", "run.completed"]
EVENT_TYPES: Final = (JOB_COMPLETED, RUN_COMPLETED)
# an event's body is small (ids, a URI, numbers): this bounds what a caller may emit
EVENT_MAX_BYTES: Final = 64 * 1024


class Event(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    id: str
    type: EventType
    timestamp: str  # ISO-8601, UTC, when the event was first emitted
    data: dict[str, Any]

    def body(self) -> str:
        """The JSON sent to every destination (and signed for webhooks), compact."""
        return json.dumps(self.model_dump(mode="json"), separators=(",", ":"), ensure_ascii=False)


def event_id(event_type: str, subject: str) -> str:
    """``evt_`` and 32 hex digits of the type and the subject (what the event is about)."""
    digest = hashlib.sha256(f"{event_type}\n{subject}".encode("utf-8", "surrogatepass"))
    return f"evt_{digest.hexdigest()[:32]}"


def make_event(
    event_type: EventType, subject: str, data: dict[str, Any], *, now: datetime | None = None
) -> Event:
    """An event of any type: its id from (type, subject), its body bounded."""
    event = Event(
        id=event_id(event_type, subject),
        type=event_type,
        timestamp=_iso(now or datetime.now(UTC)),
        data=data,
    )
    size = len(event.body().encode())
    if size > EVENT_MAX_BYTES:
        raise ValueError(f"event {event.id} is {size} bytes, above {EVENT_MAX_BYTES}")
    return event


def job_completed(
    outcome: Outcome, *, run: str | None = None, now: datetime | None = None
) -> Event:
    """A job's end (succeeded, or failed for good). The subject is the job's id, its
    fingerprint and how it ended: a redelivery of the same end is the same event; a
    different job refused under the id, or the job replayed (`gvw dead-letters replay`)
    to another end, is a new one."""
    if outcome.status not in ("succeeded", "failed"):
        raise ValueError(f"a job that is {outcome.status} has not ended")
    subject = "\n".join(
        (outcome.job_id, outcome.fingerprint or "", outcome.status, outcome.error_code or "")
    )
    return make_event(
        JOB_COMPLETED,
        subject,
        {
            "job_id": outcome.job_id,
            "status": outcome.status,
            "record_uri": outcome.record_uri or None,
            "cost_usd": outcome.cost_usd,
            "error_code": outcome.error_code if outcome.status == "failed" else None,
            "run": run,  # the run the job is counted in (docs/runs.md)
        },
        now=now,
    )


def run_completed(
    run_id: str, round_: int, summary: dict[str, Any], *, now: datetime | None = None
) -> Event:
    """A run's end: its final summary (counts by state and error code, spend, its
    summary.json's URI). The subject is the run and its round: every worker that sees
    the run finish sends the same event; a run a retry reopened ends again as a new one."""
    return make_event(RUN_COMPLETED, f"{run_id}\n{round_}", summary, now=now)


def _iso(when: datetime) -> str:
    return when.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")
