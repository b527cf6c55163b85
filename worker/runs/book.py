"""What a worker does for the run a job belongs to: move the job's state in the run's
ledger, and keep the run's summary.json current (at most one write per run every
`summary_every_s` across the fleet, and one when the run finishes) — no listing, and no
storage request for most jobs.

A job's end is told to the ledger before the job's message is acknowledged: when Redis
does not answer, the job waits for it like any other fleet outage (`FleetUnavailable`),
and its redelivery finds its record and tells the end again (a move is idempotent).
Moves before the end (running, waiting, batched) only feed `gvw runs show`: one that
Redis misses is logged, never a reason to hold a job.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass

from tasks.errors import FleetUnavailable, GvwError, RunCapReached
from worker.runs.ledger import RunLedger, failed_state
from worker.runs.records import RunDefinition, RunSummary, summary_uri
from worker.runs.status import summarize
from worker.runs.store import RunStore
from worker.storage.port import ObjectStore

log = logging.getLogger(__name__)

# a run's definition (name, cap) is read from storage at most this often per process
_DEFINITION_FRESH_S = 30.0
_DEFINITIONS_KEPT = 256


@dataclass(frozen=True)
class RunEnd:
    """A run this job's end finished: its final summary, for the run's event."""

    run_id: str
    results: str
    summary: RunSummary


class RunBook:
    def __init__(self, ledger: RunLedger, stores: ObjectStore, *, summary_every_s: float) -> None:
        self.ledger = ledger
        self._store = RunStore(stores)
        self._summary_every_s = summary_every_s
        self._definitions: dict[str, tuple[float, RunDefinition | None]] = {}
        self._mutex = threading.Lock()

    def moved(self, run_id: str, job_id: str, state: str, *, results: str) -> None:
        """A state before the job's end (``r``, ``w``, ``b``, ``h``): best effort."""
        try:
            self.ledger.move(run_id, job_id, state, folder=results)
        except FleetUnavailable as err:
            # the outage itself is logged once (worker.queue.outage_log), not per job
            log.debug(
                "run progress not counted: the fleet's Redis does not answer",
                extra={"job_id": job_id, "run": run_id, "error_message": err.message},
            )

    def ended(
        self,
        run_id: str,
        job_id: str,
        *,
        results: str,
        error_code: str | None,
        cost_usd: float | None,
    ) -> RunEnd | None:
        """The job ended (succeeded, or failed with `error_code`). Raises FleetUnavailable
        when Redis does not answer (the job waits for it). Returns the run's end when
        this end finished the run (or found it finished without its final summary)."""
        state = failed_state(error_code) if error_code else "s"
        move = self.ledger.move(run_id, job_id, state, folder=results, cost_usd=cost_usd or 0.0)
        if not (move.finished or self.ledger.summary_turn(run_id, every_s=self._summary_every_s)):
            return None
        self.ledger.touch(run_id)  # a run that moves lives on (GVW_RUN_TTL_S)
        summary = self.write_summary(run_id, results)
        if summary is None or not move.finished:
            return None
        return RunEnd(run_id, results, summary)

    def write_summary(self, run_id: str, results: str) -> RunSummary | None:
        """summary.json from the ledger's counts now; None when the fleet knows nothing
        of the run or storage did not take it (the next turn writes it)."""
        counts = self.ledger.counts(run_id)
        if counts is None:
            return None
        summary = summarize(
            run_id,
            counts,
            self.definition(run_id, results),
            now_s=time.time(),
            summary_uri=summary_uri(results, run_id),
        )
        try:
            self._store.write_summary(results, summary)
        except GvwError as err:
            log.warning(
                "could not write the run's summary",
                extra={"run": run_id, "error_message": err.message},
            )
            return None
        return summary

    def definition(self, run_id: str, results: str) -> RunDefinition | None:
        now = time.monotonic()
        with self._mutex:
            cached = self._definitions.get(run_id)
        if cached is not None and now - cached[0] < _DEFINITION_FRESH_S:
            return cached[1]
        try:
            found = self._store.definition(results, run_id)
        except GvwError:
            found = cached[1] if cached else None
        with self._mutex:
            if len(self._definitions) >= _DEFINITIONS_KEPT:
                self._definitions.pop(next(iter(self._definitions)))
            self._definitions[run_id] = (now, found)
        return found

    # --- the run's cost cap (docs/runs.md) -------------------------------------------------

    def capped(self, run_id: str | None, results: str) -> bool:
        """Whether the run has a cost cap (its run.json's `max_usd`, read at most every
        30 s per process): only then does a call reserve from it, so runs without a cap
        cost the fleet no more Redis work."""
        if run_id is None:
            return False
        definition = self.definition(run_id, results)
        return definition is not None and definition.max_usd is not None

    def reserve(self, run_id: str, job_id: str, estimate_usd: float) -> None:
        """Reserve a call's estimate under the run's cap, or `RunCapReached` (the job is
        held). The run never commits more than its cap plus one request's error."""
        if not self.ledger.reserve(run_id, job_id, estimate_usd):
            raise RunCapReached(
                f"run {run_id} has no room left under its cost cap for this request "
                f"(${estimate_usd:.6f}): the job is held until `gvw runs resume {run_id} "
                "--max-usd N`",
                run=run_id,
            )

    def settle(self, run_id: str, job_id: str, cost_usd: float) -> None:
        self.ledger.settle(run_id, job_id, cost_usd)

    def hold(self, run_id: str, job_id: str, job: str, *, results: str) -> None:
        """Keep the job until the run resumes (`RunLedger.release`)."""
        self.ledger.hold(run_id, job_id, job, folder=results)
