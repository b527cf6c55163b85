"""One job, one way: admit -> claim -> acquire -> park | obtain -> publish.

The stages, each in its own module and each reading the one `JobPlan`:

    admit    plan.py     what the fleet allows, and every fact decided before any I/O
    claim    here        the job's id (its fingerprint), its lock, what is known already:
                         a committed record, a batch it waits in, the answer it paid for
    acquire  acquire.py  the images, one at a time, as the request will carry them
    park     obtain.py   batch mode: the request waits for a Gemini batch
    obtain   obtain.py   the answer: paid already, an identical request's, or the model's;
                         stored before it is read, then read by the task
    publish  publish.py  artifacts, then result.json with a conditional create

Batch mode enters at two doors: `park` on the way out, and the paid answer (which the
follower stores) on the way back in. The only caller of the ports is this package;
decisions come from `tasks/`.
"""

from __future__ import annotations

import logging

from tasks.errors import InvalidJob, JobBusy, JobIdConflict, WorkerLost
from worker.contract.jobs import Job
from worker.contract.records import Outcome
from worker.observability import StageTimer
from worker.pipeline.acquire import PaidAnswer, acquire
from worker.pipeline.failures import publish_pending_record
from worker.pipeline.obtain import cache_lookup, obtain, park
from worker.pipeline.plan import JobPlan, admit
from worker.pipeline.ports import Ports
from worker.pipeline.publish import publish
from worker.pipeline.record_store import finished

log = logging.getLogger(__name__)


def run(
    job: Job,
    ports: Ports,
    *,
    attempt: int = 1,
    timer: StageTimer | None = None,
) -> Outcome:
    """Run one job to a committed result.json. Raises GvwError subclasses on failure."""
    timer = timer or StageTimer()
    plan = admit(job, ports, attempt=attempt)
    claim = ports.claims.claim(job.job_id, plan.fingerprint, plan.folder)
    if not claim.ours:
        raise JobIdConflict(job.job_id, holder_folder=claim.holder_folder)
    if claim.pending_record:
        # this job already failed for good while storage was down: write that record
        return publish_pending_record(ports, job.job_id, plan.folder)
    with ports.locks.hold(job.job_id) as held:
        if not held:
            raise JobBusy(f"job {job.job_id} is running on another worker")
        # Checked under the lock (once: S3 requests are most of a job's own cost): a
        # committed or failed job finishes here, without fetching or calling the model.
        done = finished(ports.stores, job.job_id, plan.folder, plan.fingerprint)
        if done is not None:
            return done
        # read once, under the lock: an answer a dead holder paid for is seen here
        paid = ports.answers.get(job.job_id, plan.fingerprint)
        waiting = _waiting(plan, ports, paid)
        if waiting is not None:
            return waiting
        # Runs that took the lock and never ended, counted here and per job: a delivery
        # that only met a dead run's lock (JobBusy) is not a run, and its Celery retry
        # must not start a fresh count. A run that ends in this worker, however it ends,
        # clears it; a kill leaves it, so it counts consecutive runs that died.
        died = ports.deliveries.count(job.job_id, 0) - 1
        if died >= ports.settings.gvw_max_deliveries:
            # no live worker holds the job, yet its runs keep dying with their worker
            # (out of memory, a crashing decoder). Stop the loop here.
            raise WorkerLost(
                f"the job's last {died} runs died with their worker "
                f"(GVW_MAX_DELIVERIES={ports.settings.gvw_max_deliveries})",
                deliveries=died,
            )
        if job.run is not None:
            results = job.output or ports.settings.gvw_results_uri
            ports.runs.moved(job.run, job.job_id, "r", results=results)
        try:
            return _answer_and_publish(plan, ports, paid, timer)
        finally:
            ports.deliveries.clear(job.job_id, 0)


def _waiting(plan: JobPlan, ports: Ports, paid: PaidAnswer | None) -> Outcome | None:
    """Why this job must not run now: it waits in a batch (an Outcome), or the fleet's
    day has no budget left (`BudgetExhausted`, a wait); None when it may run."""
    if plan.batch and ports.batches is None:
        raise InvalidJob("batch mode needs the fleet's Redis (GVW_REDIS_URL)", field="options.mode")
    if paid is not None:
        return None  # an answer already paid for is published whatever the day has left
    if ports.batches is not None and ports.batches.is_waiting(plan.job_id):
        # a redelivery of a job already waiting for its batch, or the same job sent
        # again without batch mode (the mode is not part of the job): its batch
        # answers it, and nothing is paid twice
        return Outcome(job_id=plan.job_id, status="batched", record_uri="")
    if ports.budget.enabled:
        # a day with no room left sends the job back before it reads anything
        ports.budget.ensure_open()
    return None


def _answer_and_publish(
    plan: JobPlan, ports: Ports, paid: PaidAnswer | None, timer: StageTimer
) -> Outcome:
    acquired = acquire(plan, ports, paid, timer)
    with cache_lookup(plan, ports, acquired, paid) as lookup:
        parks = paid is None and lookup.found is None and plan.batch
        if parks:
            park(plan, ports, acquired, timer)
        else:
            obtained = obtain(plan, ports, acquired, paid, lookup, timer)
    if parks:
        ports.schedule_batch_run()
        log.info("job waits for a batch", extra={"job_id": plan.job_id, "model": plan.model})
        return Outcome(job_id=plan.job_id, status="batched", record_uri="", timings_s=timer.seconds)
    sent = acquired.sent()
    del acquired  # the request's image bytes go before the artifacts are drawn
    return publish(plan, ports, sent, obtained, timer)
