"""The Celery app, its reliability settings, and the thin `vision.analyze` task.

Settings follow RELIABILITY.md: delivery is at-least-once and a job may run twice at the
same time, so the task is idempotent (result.json is a conditional create) and every
setting below makes a lost or failed delivery come back rather than vanish.
"""

from __future__ import annotations

import logging
import re
from typing import Any

from celery import Celery, Task, signals
from celery.concurrency import get_implementation
from celery.exceptions import SoftTimeLimitExceeded, TimeLimitExceeded

from tasks.errors import AttemptTimedOut, GvwError, InvalidJob, RetryableError, WorkerLost
from worker import runtime
from worker.jobs import JOB_ID_PATTERN, new_job_id, parse_job, salvage_identity
from worker.observability import (
    JOBS,
    RETRIES,
    configure_logging,
    start_metrics_server,
)
from worker.pipeline import publish_error, run
from worker.producer import QUEUE, TASK_NAME
from worker.retry_policy import RetryPolicy
from worker.settings import Settings, get_settings

log = logging.getLogger(__name__)


class InternalError(RetryableError):
    """A bug or an unforeseen failure: retried like a transient error, then recorded."""

    code = "internal"


def celery_config(settings: Settings) -> dict[str, Any]:
    visibility_timeout_s = settings.gvw_visibility_timeout_s
    transport_options = {
        "visibility_timeout": visibility_timeout_s,
        # scan for unacked messages of dead workers on every restore interval, not every
        # tenth: otherwise a lost job can take ~100 s to come back
        "unacked_restore_throttle": 1,
    }
    return {
        "broker_url": settings.celery_broker_url,
        "result_backend": settings.celery_result_backend,
        "broker_connection_retry_on_startup": True,
        "broker_transport_options": transport_options,
        "result_backend_transport_options": {"visibility_timeout": visibility_timeout_s},
        "visibility_timeout": visibility_timeout_s,
        "task_default_queue": QUEUE,
        "task_routes": {TASK_NAME: {"queue": QUEUE}},
        "task_serializer": "json",
        "result_serializer": "json",
        "accept_content": ["json"],
        "result_expires": 7 * 24 * 3600,
        "task_track_started": True,
        # ack only after the job ran; a killed worker hands the message back
        "task_acks_late": True,
        "task_reject_on_worker_lost": True,
        # our code decides retry or dead letter; without these a job that always fails
        # or times out would be redelivered forever
        "task_acks_on_failure_or_timeout": True,
        "worker_prefetch_multiplier": 1,
        "task_soft_time_limit": settings.gvw_soft_time_limit_s,
        "task_time_limit": settings.gvw_hard_time_limit_s,
        "worker_cancel_long_running_tasks_on_connection_loss": True,
        # With REMAP_SIGTERM=SIGQUIT (set in infra/Dockerfile), a deploy's SIGTERM is a cold
        # shutdown: running jobs get this long to finish, then their messages go back to
        # the queue at once instead of waiting out the visibility timeout.
        "worker_soft_shutdown_timeout": settings.gvw_soft_shutdown_timeout_s,
        "worker_enable_soft_shutdown_on_idle": True,
        "worker_hijack_root_logger": False,
    }


app = Celery("gvw")
app.conf.update(celery_config(get_settings()))


@signals.setup_logging.connect
def _setup_logging(**_: Any) -> None:
    # connecting here replaces Celery's own logging set-up: JSON lines, key scrubbed
    settings = get_settings()
    configure_logging(settings.gvw_log_level, secrets=(settings.api_key or "",))


@signals.worker_process_init.connect
def _init_pool_child(**_: Any) -> None:
    runtime.init_process(warm=True)  # each prefork child runs jobs: warm it


@signals.worker_init.connect
def _init_worker(sender: Any = None, **_: Any) -> None:
    # thread and solo pools run jobs in this process: warm it before the consumer starts.
    # (Under prefork this is the parent, which runs no job, and its children warm
    # themselves; warming the parent too would only grow what every fork copies.)
    # Celery sets logging up only after this signal: do it now, so the warm-up is logged.
    _setup_logging()
    runtime.init_process(warm=_pool_runs_jobs_here(getattr(sender, "pool_cls", None)))
    start_metrics_server(get_settings().gvw_metrics_port)


def _pool_runs_jobs_here(pool_cls: Any) -> bool:
    """Whether a worker with this pool runs jobs in its main process and is warmed at
    worker_init: threads (and gevent, eventlet) do; prefork runs them in children, and
    solo sends worker_process_init in the main process itself."""
    if pool_cls is None:
        return False
    try:
        resolved = get_implementation(pool_cls)
    except Exception:  # a pool Celery will refuse itself: nothing to warm here
        return False
    return resolved.__module__ not in ("celery.concurrency.prefork", "celery.concurrency.solo")


def retry_policy(settings: Settings) -> RetryPolicy:
    return RetryPolicy(
        base_s=settings.gvw_retry_base_s,
        max_s=settings.gvw_retry_max_s,
        max_retries=settings.gvw_max_retries,
        output_retries=settings.gvw_output_retries,
        max_timeouts=settings.gvw_max_deliveries - 1,
    )


class AnalyzeTask(Task):
    """Adds what happens when the pool kills an attempt at the hard time limit.

    With acks on timeout (needed, else such a job is redelivered forever) Celery would
    just record a failure and the job would have no result and no error record. Celery
    calls `on_failure` in the worker's main process for a hard timeout: the job is sent
    again a bounded number of times (`GVW_MAX_DELIVERIES`), then gets its error.json.
    """

    def on_failure(
        self, exc: BaseException, task_id: str, args: Any, kwargs: Any, einfo: Any
    ) -> None:
        if not isinstance(exc, TimeLimitExceeded):
            return
        job = args[0] if args else None
        try:
            parsed = parse_job(job, default_job_id=task_id)
        except InvalidJob:
            return  # an invalid job never runs long enough to time out
        ports = runtime.get_ports()
        timeouts = ports.deliveries.count(f"{parsed.job_id}:timeouts", 0)
        if timeouts < ports.settings.gvw_max_deliveries:
            log.warning(
                "attempt killed at the hard time limit, sending the job again",
                extra={"job_id": parsed.job_id, "timeouts": timeouts},
            )
            analyze.apply_async(
                args=[job], task_id=task_id, queue=QUEUE, countdown=ports.settings.gvw_retry_base_s
            )
            return
        publish_error(
            ports,
            job_id=parsed.job_id,
            task=parsed.task,
            output=parsed.output,
            error=WorkerLost(
                f"every attempt exceeded the hard time limit "
                f"({ports.settings.gvw_hard_time_limit_s} s), {timeouts} times"
            ),
            attempts=timeouts,
            job=job,
        )


# max_retries=None: our RetryPolicy bounds retries. Celery's default (3) would make the
# 4th `self.retry()` re-raise the error instead: the task fails, is acked, and the job
# ends with no result and no error record.
@app.task(name=TASK_NAME, bind=True, base=AnalyzeTask, max_retries=None)
def analyze(self: Task, job: Any) -> dict[str, Any]:
    """Validate, run the pipeline, and map errors to retry or a final error record."""
    ports = runtime.get_ports()
    retries = int(self.request.retries or 0)
    try:
        parsed = parse_job(job, default_job_id=self.request.id)
    except InvalidJob as err:
        job_id, output = salvage_identity(job)
        job_id = job_id or parse_job_id_fallback(self.request.id)
        return publish_error(
            ports,
            job_id=job_id,
            task=_task_name(job),
            output=output,
            error=err,
            attempts=retries + 1,
            job=job,
        ).as_dict()
    try:
        outcome = run(parsed, ports, attempt=retries + 1)
        JOBS.labels(parsed.task, "already_done" if outcome.already_done else outcome.status).inc()
        return outcome.as_dict()
    except GvwError as err:
        error = err
    except SoftTimeLimitExceeded:
        error = AttemptTimedOut(
            f"attempt exceeded the soft time limit ({ports.settings.gvw_soft_time_limit_s} s)"
        )
    except Exception as exc:  # a bug must end in a record too, never in silence
        log.exception("unexpected error", extra={"job_id": parsed.job_id})
        error = InternalError(f"{exc.__class__.__name__}: {exc}")
    policy = retry_policy(ports.settings)
    if policy.should_retry(error, retries):
        countdown_s = policy.countdown_s(error, retries)
        log.info(
            "retrying job",
            extra={"job_id": parsed.job_id, "code": error.code, "countdown_s": countdown_s},
        )
        RETRIES.labels(type(error).__name__).inc()
        raise self.retry(countdown=countdown_s, max_retries=None, exc=error)
    return publish_error(
        ports,
        job_id=parsed.job_id,
        task=parsed.task,
        output=parsed.output,
        error=error,
        attempts=retries + 1,
        job=job,
    ).as_dict()


def parse_job_id_fallback(task_id: str | None) -> str:
    if task_id and re.match(JOB_ID_PATTERN, task_id):
        return task_id
    return new_job_id()


def _task_name(job: Any) -> str | None:
    task = job.get("task") if isinstance(job, dict) else None
    return task if isinstance(task, str) and len(task) <= 32 else None
