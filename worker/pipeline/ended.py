"""THE seam of a job's end, and of its moves on the way there.

`job_ended` is called once a job has ended for good (succeeded, or failed with its record
written or kept), from every place the Celery task ends a job (`worker.queue.app`), and
again by a redelivery that finds the job ended: everything it does is idempotent. What
happens at a job's end goes here, and nowhere else:

1. its completion event, to the destinations its ``notify`` names (docs/events.md);
2. its run's count (docs/runs.md), and, when that end finished the run, the run's final
   summary.json and its ``run.completed`` event.

Only the fleet's Redis (the outbox, the run's ledger) and one summary write are touched: a
destination being down never holds the job. When that Redis does not answer,
`FleetUnavailable` goes to the caller, which waits for Redis as for any outage; the
redelivered job finds its record committed and tells the same end again (same event id;
a run's count moves once).

`job_moved` tells the run the moves before the end (running, waiting, queued again,
batched, held): best effort, for progress only.
"""

from __future__ import annotations

import logging
from typing import Any

from tasks.errors import FleetUnavailable
from worker.contract.jobs import Job, salvage_identity, salvage_notify, salvage_run
from worker.contract.records import Outcome
from worker.events.records import job_completed, run_completed
from worker.pipeline.ports import Ports

log = logging.getLogger(__name__)


def _run_of(job: Any) -> str | None:
    return job.run if isinstance(job, Job) else salvage_run(job)


def _results_of(ports: Ports, job: Any) -> str:
    """The results folder the job's records go to (and its run's, beside them)."""
    output = job.output if isinstance(job, Job) else salvage_identity(job)[1]
    return output or ports.settings.gvw_results_uri


def job_moved(ports: Ports, job: Any, state: str) -> None:
    """The job is running (``r``), waiting (``w``), queued again for a retry (``q``) or
    batched (``b``): for its run's progress, best effort."""
    run_id = _run_of(job)
    if run_id is None:
        return
    job_id = job.job_id if isinstance(job, Job) else job.get("job_id")
    if isinstance(job_id, str):
        ports.runs.moved(run_id, job_id, state, results=_results_of(ports, job))


def job_ended(ports: Ports, job: Job | Any, outcome: Outcome) -> None:
    """``job``: the parsed job, or what the producer sent when it was not a valid job."""
    run_id = _run_of(job)
    if outcome.status == "batched":
        # not an end: the follower sends it again with its answer
        if run_id is not None:
            ports.runs.moved(run_id, outcome.job_id, "b", results=_results_of(ports, job))
        return
    if outcome.status not in ("succeeded", "failed"):
        return
    _tell_destinations(ports, job, outcome, run_id)
    if run_id is None:
        return
    results = _results_of(ports, job)
    end = ports.runs.ended(
        run_id,
        outcome.job_id,
        results=results,
        error_code=(outcome.error_code or "unknown") if outcome.status == "failed" else None,
        cost_usd=outcome.cost_usd,
    )
    if end is None:
        return
    log.info("run finished", extra={"run": run_id, "summary": end.summary.summary_uri})
    definition = ports.runs.definition(run_id, results)
    if definition is not None and definition.notify:
        # the run's id and round: a second worker finishing it too sends the same event
        summary = end.summary
        event = run_completed(summary.run_id, summary.round, summary.model_dump(mode="json"))
        ports.events.emit(event, list(definition.notify))
    ports.runs.ledger.final_written(run_id)


def _tell_destinations(ports: Ports, job: Any, outcome: Outcome, run_id: str | None) -> None:
    notify = job.notify if isinstance(job, Job) else salvage_notify(job)
    if not notify:
        return
    try:
        ports.events.emit(job_completed(outcome, run=run_id), notify)
    except FleetUnavailable:
        raise
    except Exception:
        log.exception("could not keep the job's completion event", extra={"job_id": outcome.job_id})
