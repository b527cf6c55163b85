"""A job's end, told to those who follow it: the run it is counted in (`worker.runs`).

Called once a job has ended for good (its result.json or error.json stands), by every
path that ends one, and again by a redelivery that finds the job ended: what it tells is
idempotent. It runs before the message is acknowledged, so that a worker dying in
between leaves the message to tell it again; when the fleet's Redis does not answer it
raises `FleetUnavailable`, and the job waits for Redis like any other outage.
"""

from __future__ import annotations

import logging
from typing import Any

from worker.contract.jobs import salvage_run
from worker.contract.records import Outcome
from worker.pipeline.ports import Ports

log = logging.getLogger(__name__)


def _run_of(job: Any) -> str | None:
    return salvage_run(job) if isinstance(job, dict) else getattr(job, "run", None)


def job_moved(ports: Ports, job: Any, state: str, *, output: str | None) -> None:
    """The job is running (``r``), waiting (``w``), queued again for a retry (``q``) or
    batched (``b``): for its run's progress, best effort."""
    run_id = _run_of(job)
    if run_id is not None:
        job_id = job.get("job_id") if isinstance(job, dict) else job.job_id
        if isinstance(job_id, str):
            results = output or ports.settings.gvw_results_uri
            ports.runs.moved(run_id, job_id, state, results=results)


def job_ended(ports: Ports, job: Any, outcome: Outcome, *, output: str | None) -> None:
    """`job` is the job as sent (a dict, possibly invalid) or parsed; `output` its
    results folder as the job names it (None: GVW_RESULTS_URI)."""
    run_id = _run_of(job)
    if run_id is None:
        return
    results = output or ports.settings.gvw_results_uri
    if outcome.status == "batched":
        # not an end: the follower sends it again with its answer
        ports.runs.moved(run_id, outcome.job_id, "b", results=results)
        return
    end = ports.runs.ended(
        run_id,
        outcome.job_id,
        results=results,
        error_code=(outcome.error_code or "unknown") if outcome.status == "failed" else None,
        cost_usd=outcome.cost_usd,
    )
    if end is not None:
        log.info(
            "run finished",
            extra={"run": run_id, "summary": end.summary.summary_uri},
        )
        ports.runs.ledger.final_written(run_id)
