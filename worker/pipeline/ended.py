"""THE seam of a job's end: called once a job has ended for good (succeeded, or failed
with its record written or kept), from every place the Celery task ends a job
(`worker.queue.app`), never for a job that only waits (batched) or is retried.

What happens at a job's end goes here, and nowhere else: its completion event today
(docs/events.md); run bookkeeping next.
"""

from __future__ import annotations

import logging
from typing import Any

from tasks.errors import FleetUnavailable
from worker.contract.jobs import Job, salvage_notify
from worker.contract.records import Outcome
from worker.events.records import job_completed
from worker.pipeline.ports import Ports

log = logging.getLogger(__name__)


def job_ended(ports: Ports, job: Job | Any, outcome: Outcome) -> None:
    """Tell the job's end to the destinations its ``notify`` names (``job``: the parsed
    job, or what the producer sent when it was not a valid job).

    Only the outbox is written: a destination being down never holds the job. When the
    fleet's Redis does not answer, `FleetUnavailable` goes to the caller, which waits for
    Redis as for any outage; the redelivered job finds its record committed and emits
    the same event (same id) again: the event is never silently lost. Any other error of
    the outbox is logged, and the job ends as it would have.
    """
    if outcome.status not in ("succeeded", "failed"):
        return  # batched: the job has not ended
    notify = job.notify if isinstance(job, Job) else salvage_notify(job)
    if not notify:
        return
    try:
        ports.events.emit(job_completed(outcome), notify)
    except FleetUnavailable:
        raise
    except Exception:
        log.exception("could not keep the job's completion event", extra={"job_id": outcome.job_id})
