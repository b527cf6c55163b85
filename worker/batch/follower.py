"""The batch follower: waiting requests become Gemini batch jobs, and answers become jobs'
results, with the same guarantees as an interactive answer.

Run by the self-rescheduling `vision.batch_tick` task (one run at a time, under a Redis
lock); no other long-running service. Each run:

1. follows every open batch (`worker.fleet.batch_store`): submits the ones assembled but not
   yet submitted (or, when an earlier run died between submitting and recording, finds
   what it submitted by the batch's display name, so nothing is paid twice); polls the
   submitted ones; delivers the finished ones;
2. assembles new batches from the waiting requests of each model, once `max_requests`
   are waiting or the oldest has waited `max_wait_s`.

Delivering an answer stores it as the job's paid answer (`worker.fleet.answer_store`) and sends
the job to the queue again: the pipeline finds the paid answer and publishes it with the
same code as an interactive one (conditional create, artifacts, records), recording
`mode: "batch"` and the batch price. A request that failed inside its batch goes through
the usual retry policy (it waits for the next batch; past its retries, error.json). A
batch that fails, expires or is cancelled sends its jobs back: to the next batch, or to
the interactive path (GVW_BATCH_FALLBACK).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any

from tasks.errors import BudgetExhausted, GvwError, ModelOutputInvalid, QuotaExhausted
from tasks.pricing import answer_cost_usd
from tasks.retry_policy import RetryPolicy
from worker.fleet.batch_store import Batches, BatchRecord
from worker.fleet.budget import Reservation
from worker.gemini.records import ModelAnswer
from worker.pipeline.failures import publish_error
from worker.pipeline.ports import Ports

log = logging.getLogger(__name__)

# sends a job to the queue again, with the retries its runs have used so far
Dispatch = Callable[[dict[str, Any], int], None]


class BatchRunner:
    def __init__(
        self, ports: Ports, store: Batches, dispatch: Dispatch, policy: RetryPolicy
    ) -> None:
        self._ports = ports
        self._store = store
        self._dispatch = dispatch
        self._policy = policy
        settings = ports.settings
        self._max_requests = settings.gvw_batch_max_requests
        self._max_wait_s = settings.gvw_batch_max_wait_s
        self._inline_max_bytes = settings.gvw_batch_inline_max_bytes
        self._fallback = settings.gvw_batch_fallback

    def run_once(self) -> bool | None:
        """One follower run; True while there is work left (a next run is needed), None
        when another run holds the lock (that one schedules the next)."""
        with self._store.follower_lock() as token:
            if token is None:
                return None
            # what goes wrong with one batch, or one model's waiting requests, stays
            # with it: the fleet's other batches go on
            for batch_id in self._store.open_batches():
                try:
                    self._follow(batch_id)
                except GvwError as err:  # Gemini or storage unreachable: next run
                    log.warning(
                        "could not follow a batch", extra={"batch": batch_id, "error": err.message}
                    )
                except Exception:
                    log.exception("following a batch failed", extra={"batch": batch_id})
            for model in self._store.pending_models():
                try:
                    self._assemble(model)
                except GvwError as err:
                    log.warning(
                        "could not assemble a batch", extra={"model": model, "error": err.message}
                    )
                except Exception:
                    log.exception("assembling a batch failed", extra={"model": model})
            return self._store.has_work()

    # --- assembling and submitting -----------------------------------------------------

    def _assemble(self, model: str) -> None:
        while True:
            waiting = self._store.pending_count(model)
            if waiting == 0:
                return
            oldest = self._store.oldest_pending_at(model)
            due = oldest is not None and time.time() - oldest >= self._max_wait_s
            size = self._batch_size(model)
            if waiting < size and not due:
                return
            record = self._store.take(model, size)
            if record is None:
                return
            log.info(
                "batch assembled",
                extra={"batch": record.batch_id, "model": model, "jobs": len(record.job_ids)},
            )
            self._submit(record)

    def _batch_size(self, model: str) -> int:
        """GVW_BATCH_MAX_REQUESTS, or fewer under a day's budget: a batch is paid for at
        once, so one estimated at more than half the day's budget would wait for a day
        that never has room for it."""
        size = self._max_requests
        if not self._ports.budget.enabled:
            return size
        first = self._store.first_pending(model)
        waiting = self._store.job(first) if first is not None else None
        if waiting is not None and waiting.estimate_usd > 0:
            half_day_usd = self._ports.settings.gvw_budget_usd_per_day / 2
            size = min(size, max(1, int(half_day_usd / waiting.estimate_usd)))
        return size

    def _too_dear(self, record: BatchRecord, err: QuotaExhausted) -> None:
        """A batch estimated at more than the whole day's budget: halved (the other half
        waits for the next batch), and a single job that is this dear fails as it would
        interactively."""
        if len(record.job_ids) > 1:
            keep = record.job_ids[: len(record.job_ids) // 2]
            self._store.update(record.batch_id, job_ids=keep)
            for job_id in record.job_ids[len(keep) :]:
                self._store.requeue(job_id, record.model)
            return
        for job_id in record.job_ids:
            waiting = self._store.job(job_id)
            if waiting is not None:
                self._fail(waiting.job, job_id, err, waiting.attempt, waiting.fingerprint)
        self._store.close(record.batch_id, "returned")

    def _submit(self, record: BatchRecord) -> None:
        requests = []
        estimate_usd = 0.0
        for job_id in record.job_ids:
            waiting = self._store.job(job_id)
            if waiting is not None:
                requests.append(waiting.request)
                estimate_usd += waiting.estimate_usd
        if not requests:
            self._store.close(record.batch_id, "empty")
            return
        if record.budget_day is None and self._ports.budget.enabled:
            try:
                reservation = self._ports.budget.reserve(estimate_usd, max_wait_s=0)
            except QuotaExhausted as err:
                self._too_dear(record, err)
                return
            except BudgetExhausted:
                log.info(
                    "the day's budget has no room for a batch yet", extra={"batch": record.batch_id}
                )
                return  # stays assembled: a later run submits it
            if reservation is not None:
                self._store.update(
                    record.batch_id,
                    budget_day=reservation.day,
                    budget_micro=reservation.estimate_micro,
                )
        # recorded before the call: a run that dies inside it finds the batch by name
        self._store.update(record.batch_id, submit_started_at=f"{time.time():.3f}")
        try:
            remote, source = self._ports.gemini.create_batch(
                model=record.model,
                requests=requests,
                display_name=record.display_name,
                inline_max_bytes=self._inline_max_bytes,
            )
        except GvwError as err:
            if err.retryable:
                raise  # Gemini unreachable or busy: the next run submits it
            # refused for good (an unknown model, a request the API rejects): asking again
            # cannot help, so each job goes the interactive way and ends with its own
            # answer or its own error
            log.error(
                "Gemini refused the batch", extra={"batch": record.batch_id, "error": err.message}
            )
            self._send_back(record, f"refused: {err.message[:200]}", mode="interactive")
            return
        self._store.update(
            record.batch_id,
            state="submitted",
            name=remote.name,
            gemini_state=remote.state,
            source=source,
            submitted_at=f"{time.time():.3f}",
        )
        log.info(
            "batch submitted",
            extra={"batch": record.batch_id, "batch_name": remote.name, "requests": len(requests)},
        )

    # --- following ---------------------------------------------------------------------

    def _follow(self, batch_id: str) -> None:
        record = self._store.batch(batch_id)
        if record is None:
            self._store.drop_open(batch_id)
            return
        if record.state == "assembled":
            if record.submit_started_at is not None:
                found = self._ports.gemini.find_batch(record.display_name)
                if found is not None:
                    self._store.update(
                        batch_id, state="submitted", name=found.name, gemini_state=found.state
                    )
                    log.info(
                        "adopted a batch submitted by a run that died", extra={"batch": batch_id}
                    )
                    return
            self._submit(record)
            return
        if record.state != "submitted":
            self._store.close(batch_id, record.state)
            return
        try:
            remote = self._ports.gemini.get_batch(record.name)
        except GvwError as err:
            if err.retryable:
                raise
            # Gemini no longer knows it (deleted, another project's): its jobs go again
            self._send_back(record, f"unreadable: {err.message[:200]}")
            return
        if remote.state != record.gemini_state:
            self._store.update(batch_id, gemini_state=remote.state)
        if not remote.finished:
            return
        if remote.state == "JOB_STATE_SUCCEEDED":
            self._deliver(record)
        else:
            self._send_back(record, remote.state)

    def _deliver(self, record: BatchRecord) -> None:
        try:
            answers = self._ports.gemini.batch_answers(record.name)
        except GvwError as err:
            if err.retryable:
                raise  # Gemini unreachable: the next run reads them
            # the answers cannot be had (the result file is gone, 48 h after the batch
            # ended, or refused): the jobs go again, as for a batch Gemini no longer knows.
            # Gemini billed the batch all the same: the budget counts its estimate.
            self._send_back(record, f"answers unreadable: {err.message[:200]}", billed=True)
            return
        delivered = failed = 0
        spent_usd = 0.0
        for job_id in record.job_ids:
            waiting = self._store.job(job_id)
            if waiting is None:
                continue  # delivered by an earlier run that died before closing the batch
            found = answers.get(job_id)
            if isinstance(found, ModelAnswer):
                self._ports.answers.put(job_id, waiting.fingerprint, found, waiting.transports)
                spent_usd += self._cost_usd(record.model, found)
                self._dispatch(waiting.job, waiting.attempt - 1)
                self._store.forget_job(job_id)
                delivered += 1
                continue
            error = found or ModelOutputInvalid(
                "the batch ended without an answer for this request", raw_text=""
            )
            tries = self._store.count_try(job_id)
            if self._policy.should_retry(error, tries - 1):
                self._store.requeue(job_id, record.model)  # the next batch asks again
            else:
                self._fail(waiting.job, job_id, error, tries, waiting.fingerprint)
            failed += 1
        self._settle(record, spent_usd)
        self._store.close(record.batch_id, "delivered")
        log.info(
            "batch delivered",
            extra={"batch": record.batch_id, "answers": delivered, "failed": failed},
        )

    def _send_back(
        self, record: BatchRecord, state: str, *, mode: str | None = None, billed: bool = False
    ) -> None:
        """A batch that failed, expired or was cancelled: its jobs go to the queue again,
        in batch mode or interactive (GVW_BATCH_FALLBACK). A worker builds each request
        anew: the uploads the old one named may be gone (an expired batch is 48 hours
        old)."""
        for job_id in record.job_ids:
            waiting = self._store.job(job_id)
            if waiting is None:
                continue
            job = dict(waiting.job)
            job["options"] = {**(job.get("options") or {}), "mode": mode or self._fallback}
            self._store.forget_job(job_id)
            try:
                self._dispatch(job, waiting.attempt - 1)
            except Exception:
                # the broker refused it: the job waits here again, as it was
                self._store.add_job(
                    job_id,
                    job=waiting.job,
                    request=waiting.request,
                    model=waiting.model,
                    fingerprint=waiting.fingerprint,
                    transports=waiting.transports,
                    estimate_usd=waiting.estimate_usd,
                    attempt=waiting.attempt,
                )
                raise
        # a batch that ended without answers is not billed; one that succeeded is, at
        # what it was estimated to cost (its answers, and their usage, are out of reach)
        self._settle(record, None if billed else 0.0)
        self._store.close(record.batch_id, "returned")
        log.warning(
            "batch ended without answers: its jobs go again",
            extra={"batch": record.batch_id, "state": state, "to": mode or self._fallback},
        )

    def _cost_usd(self, model: str, answer: ModelAnswer) -> float:
        usage = answer.usage
        cost = answer_cost_usd(
            self._ports.prices,
            model,
            prompt_tokens=usage.prompt_tokens,
            output_tokens=usage.output_tokens,
            thoughts_tokens=usage.thoughts_tokens,
            batch=True,
        )
        return cost or 0.0

    def _settle(self, record: BatchRecord, spent_usd: float | None) -> None:
        """Settle the batch's reservation at ``spent_usd`` (None: at its estimate)."""
        fresh = self._store.batch(record.batch_id)
        if fresh is not None and fresh.budget_day is not None:
            # forgotten first: a run that dies here leaves the reservation to expire with
            # its day rather than letting a second run settle it twice
            self._store.update(record.batch_id, budget_day="")
            reservation = Reservation(fresh.budget_day, fresh.budget_micro)
            spent = fresh.budget_micro / 1e6 if spent_usd is None else spent_usd
            self._ports.budget.settle(reservation, spent)

    def _fail(
        self, job: dict[str, Any], job_id: str, error: GvwError, tries: int, fingerprint: str
    ) -> None:
        publish_error(
            self._ports,
            job_id=job_id,
            task=job.get("task"),
            output=job.get("output"),
            error=error,
            attempts=tries,
            job=job,
            fingerprint=fingerprint,
        )
        self._store.forget_job(job_id)
