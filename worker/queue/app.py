"""The Celery app, its reliability settings, and the thin `vision.analyze` task.

Settings follow docs/reliability.md: delivery is at-least-once and a job may run twice at the
same time, so the task is idempotent (result.json is a conditional create) and every
setting below makes a lost or failed delivery come back rather than vanish.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import re
import sys
import threading
import time
from dataclasses import dataclass
from typing import Any, ClassVar, NoReturn

import redis
from celery import Celery, Task, bootsteps, signals
from celery.concurrency import get_implementation
from celery.exceptions import (
    Reject,
    SoftTimeLimitExceeded,
    TimeLimitExceeded,
)
from kombu.exceptions import OperationalError

from tasks import registry
from tasks.errors import (
    AttemptTimedOut,
    FleetUnavailable,
    GvwError,
    InternalError,
    InvalidJob,
    PermanentError,
    RecordNotWritten,
    RunCapReached,
    WorkerLost,
)
from tasks.retry_policy import RetryPolicy, is_outage, is_waiting
from worker import runtime
from worker.batch.follower import BatchRunner
from worker.contract.jobs import (
    JOB_ID_PATTERN,
    Job,
    new_job_id,
    parse_job,
    salvage_identity,
)
from worker.contract.names import QUEUE, TASK_NAME
from worker.contract.records import Outcome
from worker.events.deliverer import Deliverer
from worker.events.outbox import RUN_GRACE_S
from worker.events.senders import default_senders
from worker.observability import (
    JOBS,
    RETRIES,
    configure_logging,
    start_metrics_server,
)
from worker.pipeline.ended import job_ended, job_moved
from worker.pipeline.failures import job_fingerprint, publish_error
from worker.pipeline.flow import run
from worker.pipeline.ports import Ports
from worker.queue.message_guard import task_label
from worker.queue.outage_log import OUTAGES
from worker.queue.remote_control import restrict_remote_control
from worker.settings import Settings, get_settings

log = logging.getLogger(__name__)


def celery_config(settings: Settings) -> dict[str, Any]:
    visibility_timeout_s = settings.gvw_visibility_timeout_s
    transport_options = {
        "visibility_timeout": visibility_timeout_s,
        # scan for unacked messages of dead workers on every restore interval, not every
        # tenth: otherwise a lost job can take ~100 s to come back
        "unacked_restore_throttle": 1,
    }
    config: dict[str, Any] = {
        "broker_url": settings.celery_broker_url,
        # results live in storage: no result backend unless CELERY_RESULT_BACKEND names
        # one (then task states are kept there too, for those who read them)
        "result_backend": settings.celery_result_backend,
        "task_ignore_result": settings.celery_result_backend is None,
        "broker_connection_retry_on_startup": True,
        "broker_transport_options": transport_options,
        "result_backend_transport_options": {"visibility_timeout": visibility_timeout_s},
        "visibility_timeout": visibility_timeout_s,
        "task_default_queue": QUEUE,
        "task_routes": {
            TASK_NAME: {"queue": QUEUE},
            BATCH_TASK_NAME: {"queue": QUEUE},
            EVENTS_TASK_NAME: {"queue": QUEUE},
        },
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
        # a prefork child running a job when the broker goes away is stopped, and its
        # message goes back on the queue once the broker answers (worker.queue.broker_transport);
        # a thread cannot be stopped, so a thread pool lets it finish (see _init_worker)
        "worker_cancel_long_running_tasks_on_connection_loss": True,
        # With REMAP_SIGTERM=SIGQUIT (set in infra/Dockerfile), a deploy's SIGTERM is a cold
        # shutdown: running jobs get this long to finish, then their messages go back to
        # the queue at once instead of waiting out the visibility timeout.
        "worker_soft_shutdown_timeout": settings.gvw_soft_shutdown_timeout_s,
        "worker_enable_soft_shutdown_on_idle": True,
        "worker_hijack_root_logger": False,
        # Flower (and `celery events`) show tasks only from task events
        "worker_send_task_events": True,
        "task_send_sent_event": True,
        # every incoming message's shape is checked before Celery reads it: a malformed
        # one is refused and recorded, never a crash of the worker (worker.queue.message_guard);
        # a broker outage is never a crash either (worker.queue.consumer)
        "worker_consumer": "worker.queue.consumer:WorkerConsumer",
    }
    if settings.celery_broker_url.startswith("redis://"):
        # a message Redis hands over as it goes away is put back, never dropped
        # (worker.queue.broker_transport). Only for `redis://`: naming a transport class turns
        # off kombu's reading of `rediss://` (TLS) and `sentinel://` from the URL's scheme.
        config["broker_transport"] = "worker.queue.broker_transport:Transport"
    return config


app = Celery("gvw")
# read when Celery first needs its configuration (a worker starting, a task sent), not
# when this module is imported: importing the app reads no environment
app.add_defaults(lambda: celery_config(get_settings()))


@signals.setup_logging.connect
def _setup_logging(**_: Any) -> None:
    # connecting here replaces Celery's own logging set-up: text or JSON lines, key
    # scrubbed, at the level of the command line's --loglevel, else GVW_LOG_LEVEL
    settings = get_settings()
    level = loglevel_flag(sys.argv) or settings.gvw_log_level
    configure_logging(
        level,
        fmt=settings.gvw_log_format,
        secrets=(settings.api_key or "", *settings.notify_secrets),
    )


def loglevel_flag(argv: list[str]) -> str | None:
    """The level a `celery worker` / `gvw worker` command line asked for (``-l LEVEL``,
    ``--loglevel LEVEL``, ``--loglevel=LEVEL``, ``-lLEVEL``), or None. Read from the command
    line itself: Celery hands its handlers a level even when none was given."""
    for index, arg in enumerate(argv):
        if arg in ("-l", "--loglevel") and index + 1 < len(argv):
            return argv[index + 1].upper()
        if arg.startswith("--loglevel="):
            return arg.partition("=")[2].upper()
        if arg.startswith("-l") and len(arg) > 2 and not arg.startswith("--"):
            return arg[2:].upper()
    return None


@signals.worker_process_init.connect
def _init_pool_child(**_: Any) -> None:
    sys.unraisablehook = _exit_as_told
    runtime.init_process(warm=True)  # each prefork child runs jobs: warm it


def _exit_as_told(unraisable: Any) -> None:
    """A prefork child told to stop (SIGTERM: Celery cancels the jobs in flight when the
    broker goes away) exits by the SystemExit that billiard's signal handler raises in
    whatever frame is running. When that frame is a weakref callback or a ``__del__``,
    Python ignores the exception, prints "Exception ignored in ... SystemExit: -241" with
    a traceback, and the child runs on with its cancelled job. Exit as told instead."""
    import billiard.common  # billiard's own flag: set only by its shutdown handler

    if isinstance(unraisable.exc_value, SystemExit) and billiard.common._should_have_exited[0]:
        code = unraisable.exc_value.code
        os._exit(code & 0xFF if isinstance(code, int) else 1)
    sys.__unraisablehook__(unraisable)


@signals.worker_init.connect
def _init_worker(sender: Any = None, **_: Any) -> None:
    # thread and solo pools run jobs in this process: warm it before the consumer starts.
    # (Under prefork this is the parent, which runs no job, and its children warm
    # themselves; warming the parent too would only grow what every fork copies.)
    # Celery sets logging up only after this signal: do it now, so the warm-up is logged.
    _setup_logging()
    problem = startup_problem(runtime.settings())
    if problem is not None:
        # a worker that cannot call Gemini would take every job and dead-letter it
        print(f"gvw worker: {problem}", file=sys.stderr, flush=True)
        raise SystemExit(2)  # a BaseException: Celery's signal dispatch lets it through
    # producers share the broker: only read-only control commands are obeyed
    restrict_remote_control()
    if sender is not None and _pool_runs_jobs_here(getattr(sender, "pool_cls", None)):
        # Celery cannot stop a thread: trying writes a traceback per running job on every
        # broker outage. The job runs on; its message is put back on the queue when the
        # broker answers (worker.queue.broker_transport), and a second run finds its result.
        # (Celery's notice on each outage that this will be its default is about a choice
        # made here on purpose: worker.observability.OutageWaitFilter drops it)
        sender.app.conf.worker_cancel_long_running_tasks_on_connection_loss = False
    runtime.init_process(warm=_pool_runs_jobs_here(getattr(sender, "pool_cls", None)))
    settings = runtime.settings()
    start_metrics_server(
        settings.gvw_metrics_port,
        addr=settings.gvw_metrics_addr,
        multiproc_dir=settings.prometheus_multiproc_dir,
    )


def startup_problem(settings: Settings) -> str | None:
    """Why a worker with these settings must not start, in one line, or None."""
    if settings.api_key is None and settings.gemini_base_url is None:
        return (
            "no Gemini API key: set GEMINI_API_KEY (or GOOGLE_API_KEY), or point "
            "GEMINI_BASE_URL at an emulator (gvw emulator); `gvw doctor` checks a deployment"
        )
    return None


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
        max_outage_wait_s=settings.gvw_outage_max_wait_s,
    )


# what publishing a retry raises when the broker does not take it
_BROKER_AWAY = (OperationalError, ConnectionError, OSError, redis.ConnectionError)


class AnalyzeTask(Task):
    """Adds what happens when the pool kills an attempt at the hard time limit.

    With acks on timeout (needed, else such a job is redelivered forever) Celery would
    just record a failure and the job would have no result and no error record. Celery
    calls `on_failure` in the worker's main process for a hard timeout: the job is sent
    again a bounded number of times (`GVW_MAX_DELIVERIES`), then gets its error.json.
    """

    def retry(self, *args: Any, **kwargs: Any) -> Any:
        """Celery's retry, except when the retry cannot be sent (the broker is away):
        Celery then rejects the message *without* requeueing it, and once the broker
        answers again that reject deletes the job. Here the message is requeued instead
        (put back where it was, or, while the broker is still away, restored on
        reconnection by worker.queue.broker_transport): a job is never dropped for an outage."""
        try:
            return super().retry(*args, **kwargs)
        except Reject as reject:
            # only a retry the broker did not take: anything else is Celery's to decide
            if reject.requeue or not isinstance(reject.reason, _BROKER_AWAY):
                raise
            raise Reject(reject.reason, requeue=True) from reject

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
        timeouts = ports.deliveries.count_timeout(parsed.job_id)
        if timeouts < ports.settings.gvw_max_deliveries:
            log.warning(
                "attempt killed at the hard time limit, sending the job again",
                extra={"job_id": parsed.job_id, "timeouts": timeouts},
            )
            analyze.apply_async(
                args=[job], task_id=task_id, queue=QUEUE, countdown=ports.settings.gvw_retry_base_s
            )
            return
        try:
            outcome = publish_error(
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
                fingerprint=job_fingerprint(parsed, ports.settings),
            )
        except RecordNotWritten as err:
            # acked already: the dead-letter entry, written first, is the job's record
            log.error(
                "storage did not take the error record; the dead-letter index keeps it",
                extra={"job_id": parsed.job_id, "error_message": err.message},
            )
            JOBS.labels(_task_label(parsed.task), "failed").inc()
            return
        # in the main process, with no message to send back: an event Redis does not
        # take now is logged (`_job_ended_or_log`)
        _job_ended_or_log(ports, parsed, outcome)
        _ended(outcome, parsed.task)


# max_retries=None: our RetryPolicy bounds retries. Celery's default (3) would make the
# 4th `self.retry()` re-raise the error instead: the task fails, is acked, and the job
# ends with no result and no error record.
@app.task(name=TASK_NAME, bind=True, base=AnalyzeTask, max_retries=None)
def analyze(self: Task, *args: Any, **kwargs: Any) -> dict[str, Any]:
    """Validate, run the pipeline, and map errors to retry or a final error record.

    The job is the one positional argument; anything else a producer sent (no argument,
    several, keyword arguments) is refused and recorded like any invalid job. Every job
    that ends here is counted once in `gvw_jobs_total`; a retry is not an end.
    """
    ports = _wired(runtime.get_ports())
    retries = int(self.request.retries or 0)
    job, shape_problem = _job_argument(args, kwargs)
    try:
        if shape_problem is not None:
            raise InvalidJob(f"malformed task message: {shape_problem}")
        parsed = parse_job(job, default_job_id=self.request.id)
    except InvalidJob as err:
        job_id, output = salvage_identity(job)
        return _record_failure(
            self,
            ports,
            job_id=job_id or parse_job_id_fallback(self.request.id),
            task=task_label(job),
            output=output,
            error=err,
            attempts=retries + 1,
            job=job,
        )
    recorded = _final_error(self.request)
    if recorded is not None:
        # the job already failed for good, and came back only to write its record
        return _record_failure(
            self,
            ports,
            job_id=parsed.job_id,
            task=parsed.task,
            output=parsed.output,
            error=recorded,
            attempts=retries,
            job=job,
            fingerprint=job_fingerprint(parsed, ports.settings),
        )
    error: GvwError
    try:
        outcome = run(parsed, ports, attempt=retries + 1)
        OUTAGES.through()
    except RecordNotWritten as err:
        return _retry_record(
            self,
            ports,
            parsed.job_id,
            parsed.task,
            err,
            job=parsed,
            fingerprint=job_fingerprint(parsed, ports.settings),
        )
    except RunCapReached as err:
        try:
            return _hold(ports, parsed, job, err)
        except FleetUnavailable as away:
            error = away
    except GvwError as err:
        error = err
    except SoftTimeLimitExceeded:
        error = AttemptTimedOut(
            f"attempt exceeded the soft time limit ({ports.settings.gvw_soft_time_limit_s} s)"
        )
    except Exception as exc:  # a bug must end in a record too, never in silence
        log.exception("unexpected error", extra={"job_id": parsed.job_id})
        error = InternalError(f"{exc.__class__.__name__}: {exc}")
    else:
        return _job_end(self, ports, parsed, outcome, parsed.task)
    return _retry_or_record(
        self,
        ports,
        error,
        job_id=parsed.job_id,
        task=parsed.task,
        output=parsed.output,
        attempts=retries + 1,
        job=job,
        fingerprint=job_fingerprint(parsed, ports.settings),
    )


def _hold(ports: Ports, parsed: Job, job: Any, err: RunCapReached) -> dict[str, Any]:
    """The job's run has no room left under its cost cap: the job is kept with the run
    (neither retried nor failed) and its message acknowledged; `gvw runs resume` sends it
    again."""
    assert parsed.run is not None
    results = parsed.output or ports.settings.gvw_results_uri
    ports.runs.hold(parsed.run, parsed.job_id, json.dumps(job), results=results)
    log.info(
        "job held by its run's cost cap",
        extra={"job_id": parsed.job_id, "run": parsed.run, "error_message": err.message},
    )
    return {"job_id": parsed.job_id, "status": "held", "uri": "", "already_done": False}


def _count_wait(ports: Ports, job_id: str) -> None:
    """The fleet's count of a job's waits, for operators (the message's own count is the
    one the retry policy reads): best effort, nothing when Redis does not answer."""
    with contextlib.suppress(FleetUnavailable, redis.RedisError):
        ports.deliveries.count_wait(job_id)


# Message headers a job's retries carry (Celery keeps custom headers on the message, and a
# retry is sent with ours): how often it waited (went back to the queue without failing),
# and since when, and how often, it has waited for a service that is down. In the message,
# not in Redis: they hold while Redis is the service that is down.
WAITS_HEADER = "gvw_waits"
OUTAGE_SINCE_HEADER = "gvw_outage_since"
OUTAGE_WAITS_HEADER = "gvw_outage_waits"
# a failure whose record could not be written yet (`_wait_to_record`)
FINAL_ERROR_HEADER = "gvw_final_error"


def message_header(request: Any, name: str) -> Any:
    """A custom header of the task's message: a worker sets it on the request itself, an
    eager `apply` (in-process tests) keeps it in ``request.headers``."""
    value = getattr(request, name, None)
    if value is None:
        headers = getattr(request, "headers", None)
        value = headers.get(name) if isinstance(headers, dict) else None
    return value


@dataclass(frozen=True)
class Waits:
    """What a job's message says of its waits so far (`WAITS_HEADER` and the rest)."""

    waits: int = 0
    outage_since: float | None = None
    outage_waits: int = 0

    @classmethod
    def of(cls, request: Any, *, job_id: str = "", ports: Ports | None = None) -> Waits:
        """From the message's headers. A message without them (a job the batch follower
        sends back) takes the fleet's count of the job's waits, when Redis answers."""

        def number(name: str) -> float | None:
            value = message_header(request, name)
            return float(value) if isinstance(value, int | float) and value >= 0 else None

        waits = number(WAITS_HEADER)
        if waits is None and ports is not None and job_id:
            with contextlib.suppress(FleetUnavailable, redis.RedisError):
                waits = float(ports.deliveries.waits(job_id))
        return cls(
            waits=int(waits or 0),
            outage_since=number(OUTAGE_SINCE_HEADER),
            outage_waits=int(number(OUTAGE_WAITS_HEADER) or 0),
        )

    def outage_headers(self, since: float) -> dict[str, Any]:
        """The headers of the message that waits once more for a service that is down."""
        return {
            WAITS_HEADER: self.waits + 1,
            OUTAGE_SINCE_HEADER: since,
            OUTAGE_WAITS_HEADER: self.outage_waits + 1,
        }


def _wait_for_outage(
    self: Task,
    ports: Ports,
    error: GvwError,
    *,
    job_id: str,
    seen: Waits,
    since: float,
    countdown_s: float,
    carried: dict[str, Any] | None = None,
) -> NoReturn:
    """The job goes back to the queue to wait once more for the service ``error`` says is
    down: counted, logged as part of the outage (not as a line per job), and carrying its
    waits (and ``carried``: more headers) in the message."""
    _count_wait(ports, job_id)
    OUTAGES.waiting(error, job_id=job_id, countdown_s=countdown_s)
    RETRIES.labels(type(error).__name__).inc()
    headers = {**seen.outage_headers(since), **(carried or {})}
    raise self.retry(countdown=countdown_s, max_retries=None, exc=error, headers=headers)


def _retry_or_record(
    self: Task, ports: Ports, error: GvwError, *, job_id: str, **failure: Any
) -> dict[str, Any]:
    """Send the job back to the queue (a retry, a wait, a wait for a service that is
    down), or write its error record when it is done trying."""
    policy = retry_policy(ports.settings)
    retries = int(self.request.retries or 0)
    seen = Waits.of(self.request, job_id=job_id, ports=ports)
    outage = is_outage(error)
    now = time.time()
    outage_since = (seen.outage_since or now) if outage else None
    outage_s = now - outage_since if outage_since is not None else 0.0
    waits = seen.waits + (1 if outage or is_waiting(error) else 0)
    if policy.should_retry(error, retries, waits_so_far=waits, outage_s=outage_s):
        countdown_s = policy.countdown_s(error, retries - waits, outage_waits=seen.outage_waits)
        job_moved(ports, failure.get("job"), "w" if waits > seen.waits else "q")
        if outage_since is not None:
            _wait_for_outage(
                self,
                ports,
                error,
                job_id=job_id,
                seen=seen,
                since=outage_since,
                countdown_s=countdown_s,
            )
        if waits > seen.waits:
            _count_wait(ports, job_id)
        log.info(
            "retrying job",
            extra={"job_id": job_id, "code": error.code, "countdown_s": countdown_s},
        )
        RETRIES.labels(type(error).__name__).inc()
        raise self.retry(
            countdown=countdown_s, max_retries=None, exc=error, headers={WAITS_HEADER: waits}
        )
    if outage:
        # waited as long as a job may: the record says for what, and how long
        error = type(error)(
            f"{error.message} (waited {outage_s:.0f} s for {getattr(error, 'dependency', '')} "
            f"to answer; GVW_OUTAGE_MAX_WAIT_S is {ports.settings.gvw_outage_max_wait_s:g})",
            **error.details,
        )
    return _record_failure(self, ports, job_id=job_id, error=error, **failure)


def _job_argument(args: tuple[Any, ...], kwargs: dict[str, Any]) -> tuple[Any, str | None]:
    """The job, and what is wrong with how it was sent (None when nothing is)."""
    first = args[0] if args else None
    if kwargs:
        names = ", ".join(repr(str(k)[:40]) for k in list(kwargs)[:5])
        return first, (
            f"unexpected kwargs ({names}): the job is the task's one positional argument"
        )
    if len(args) != 1:
        return first, f"expected the job as the one positional argument, got {len(args)} args"
    return first, None


def _record_failure(self: Task, ports: Ports, **failure: Any) -> dict[str, Any]:
    """Write the job's error record (dead-letter entry first); when storage does not take
    it, the message comes back to write it later; when the fleet's Redis does not answer,
    the job waits for it (its record is written once it is back)."""
    try:
        outcome = publish_error(ports, **failure)
    except RecordNotWritten as err:
        return _retry_record(
            self,
            ports,
            failure["job_id"],
            failure["task"],
            err,
            job=failure.get("job"),
            fingerprint=failure.get("fingerprint"),
        )
    except FleetUnavailable as err:
        return _wait_to_record(self, ports, err, failure["job_id"], failure["error"])
    OUTAGES.through()
    return _job_end(
        self, ports, failure.get("job"), outcome, failure["task"], final=failure["error"]
    )


def _wait_to_record(
    self: Task, ports: Ports, err: FleetUnavailable, job_id: str, final: GvwError
) -> dict[str, Any]:
    """The job failed for good, and its record cannot be written while the fleet's Redis
    is away (its dead-letter entry and claim live there): the message waits for Redis,
    however long, carrying the failure (`FINAL_ERROR_HEADER`) so that the next delivery
    only writes the record, never runs the job (or pays for a call) again."""
    seen = Waits.of(self.request)
    _wait_for_outage(
        self,
        ports,
        err,
        job_id=job_id,
        seen=seen,
        since=seen.outage_since or time.time(),
        countdown_s=retry_policy(ports.settings).outage_countdown_s(seen.outage_waits),
        carried={FINAL_ERROR_HEADER: final.to_record() | {"code": final.code}},
    )


def _final_error(request: Any) -> GvwError | None:
    """The failure a message carries (`_wait_to_record`), as an error of the same code."""
    carried = message_header(request, FINAL_ERROR_HEADER)
    if not isinstance(carried, dict) or not isinstance(carried.get("code"), str):
        return None
    details = {k: v for k, v in carried.items() if k not in ("code", "message", "retryable")}
    recorded = type("RecordedError", (PermanentError,), {"code": carried["code"]})
    return recorded(str(carried.get("message", "")), **details)


def _retry_record(
    self: Task,
    ports: Ports,
    job_id: str,
    task: str | None,
    err: RecordNotWritten,
    *,
    job: Any = None,
    fingerprint: str | None = None,
) -> dict[str, Any]:
    """The job failed for good, but storage did not take error.json: storage is down, and
    the message waits for it (as for any outage, up to GVW_OUTAGE_MAX_WAIT_S) to write the
    record its dead-letter entry keeps, without running the job again. Past that bound the
    entry is the job's only record, and the log says so."""
    seen = Waits.of(self.request)
    now = time.time()
    since = seen.outage_since or now
    if now - since <= ports.settings.gvw_outage_max_wait_s:
        _wait_for_outage(
            self,
            ports,
            err,
            job_id=job_id,
            seen=seen,
            since=since,
            countdown_s=retry_policy(ports.settings).outage_countdown_s(seen.outage_waits),
        )
    log.error(
        "gave up writing the error record; the dead-letter index keeps it (gvw dead-letters list)",
        extra={"job_id": job_id, "waited_s": round(now - since), "error_message": err.message},
    )
    code = err.details.get("code")
    outcome = Outcome(
        job_id=job_id,
        status="failed",
        record_uri="",
        error_code=code if isinstance(code, str) else err.code,
        fingerprint=fingerprint,
    )
    _job_ended_or_log(ports, job, outcome)
    JOBS.labels(_task_label(task), "failed").inc()
    return outcome.as_dict()


def _job_end(
    self: Task,
    ports: Ports,
    job: Any,
    outcome: Outcome,
    task: str | None,
    *,
    final: GvwError | None = None,
) -> dict[str, Any]:
    """A job's end: the one seam (`worker.pipeline.ended.job_ended`), then its count.

    When the fleet's Redis does not take the job's completion event, the message waits
    for Redis like any outage (its record is committed already): the next delivery
    finds the record and emits the same event. A failure (``final``) waits carrying its
    error, so that delivery only finds the record, never runs the job again."""
    try:
        job_ended(ports, job, outcome)
    except FleetUnavailable as err:
        if final is not None:
            return _wait_to_record(self, ports, err, outcome.job_id, final)
        seen = Waits.of(self.request)
        _wait_for_outage(
            self,
            ports,
            err,
            job_id=outcome.job_id,
            seen=seen,
            since=seen.outage_since or time.time(),
            countdown_s=retry_policy(ports.settings).outage_countdown_s(seen.outage_waits),
        )
    return _ended(outcome, task)


def _job_ended_or_log(ports: Ports, job: Any, outcome: Outcome) -> None:
    """`job_ended` where no message can wait for Redis (the hard time limit's handler, a
    record storage never took): an event Redis does not take is logged, and lost."""
    try:
        job_ended(ports, job, outcome)
    except FleetUnavailable as err:
        log.error(
            "the fleet's Redis did not take the job's completion event; it is not sent",
            extra={"job_id": outcome.job_id, "error_message": err.message},
        )


def _ended(outcome: Outcome, task: str | None) -> dict[str, Any]:
    """Count the job's end, once: succeeded, failed, or already_done (a job waiting for
    its batch has not ended: the follower sends it again with its answer)."""
    if outcome.status == "batched":
        return outcome.as_dict()
    kind = "already_done" if outcome.already_done else outcome.status
    JOBS.labels(_task_label(task), kind).inc()
    return outcome.as_dict()


# --- batch mode: the follower (worker/batch/follower.py) -------------------------------------

BATCH_TASK_NAME = "vision.batch_tick"


@app.task(name=BATCH_TASK_NAME, bind=True, max_retries=None)
def batch_tick(self: Task, *_args: Any, **_kwargs: Any) -> bool:
    """One follower run; schedules the next while batches are waiting or running. Any
    producer may send this message: a run is idempotent, and one runs at a time."""
    ports = _wired(runtime.get_ports())
    if ports.batches is None:
        return False
    runner = BatchRunner(ports, ports.batches, dispatch_job, retry_policy(ports.settings))
    more: bool | None = True
    try:
        more = runner.run_once()
    except (GvwError, redis.RedisError) as err:
        log.warning("batch follower run failed; trying again later", extra={"error": str(err)})
    except Exception:  # a bug must not stop the follower: logged, and the next run comes
        log.exception("batch follower run failed")
    finally:
        # a run that found another one running leaves the schedule to it: extra runs
        # (a worker's start, the watch) die out instead of following each other forever
        if more is not None:
            ports.batches.release_tick()
            if more or ports.batches.has_work():
                schedule_batch_run()
    return bool(more)


def schedule_batch_run() -> None:
    """A follower run within GVW_BATCH_POLL_S, unless one is scheduled already."""
    ports = runtime.get_ports()
    if ports.batches is None:
        return
    poll_s = ports.settings.gvw_batch_poll_s
    if ports.batches.claim_tick(within_s=poll_s * 3):
        app.send_task(BATCH_TASK_NAME, queue=QUEUE, countdown=poll_s)


def dispatch_job(job: dict[str, Any], retries: int = 0) -> None:
    """A job sent to the queue again (its answer arrived, or its batch ended without),
    with the retries its runs have used: the retry policy's count goes on."""
    app.send_task(
        TASK_NAME, args=[job], queue=QUEUE, task_id=str(job["job_id"]), retries=max(0, retries)
    )


def _watch_batches() -> None:
    """Start the follower if no run is scheduled: at a worker's start (a fleet restarted
    while batches were pending), and again if its chain of runs broke. A run schedules
    the next one through the broker; when Redis goes down at that moment (or the message
    waits in a dead worker's unacked set for the visibility timeout), no run is
    scheduled, the claim expires (3 polls), and this sends a new one. A scheduled run is
    left alone."""
    try:
        ports = runtime.get_ports()
        if ports.batches is not None and ports.batches.has_work():
            schedule_batch_run()
    except (redis.RedisError, GvwError, OperationalError):  # the broker's own, from kombu
        log.warning("could not look for pending batches", exc_info=True)


class BatchWatch(bootsteps.StartStopStep):  # type: ignore[misc]
    """A consumer step: `_watch_batches` at every (re)connection to the broker and every
    three GVW_BATCH_POLL_S after, in the consumer's own timer (one per worker)."""

    requires: ClassVar[set[str]] = {"celery.worker.consumer.tasks:Tasks"}

    def __init__(self, parent: Any, **kwargs: Any) -> None:
        super().__init__(parent, **kwargs)
        self.timer_entry: Any = None

    def start(self, parent: Any) -> None:
        _watch_batches()
        interval_s = runtime.settings().gvw_batch_poll_s * 3
        self.timer_entry = parent.timer.call_repeatedly(interval_s, _watch_batches)

    def stop(self, parent: Any) -> None:
        if self.timer_entry is not None:
            self.timer_entry.cancel()
            self.timer_entry = None


app.steps["consumer"].add(BatchWatch)


def _wired(ports: Ports) -> Ports:
    """The process's ports, with what only the Celery app can do: ask for a batch
    follower run, and for an event delivery run."""
    ports.schedule_batch_run = schedule_batch_run
    ports.events.wake = schedule_events_run
    return ports


# --- completion events: delivery runs (worker/events/deliverer.py) ---------------------------

EVENTS_TASK_NAME = "vision.events_tick"
_deliverer_guard = threading.Lock()
_deliverers: dict[int, Deliverer] = {}


def send_event_task(queue: str, task_name: str, event: dict[str, Any], event_id: str) -> None:
    """A ``celery:QUEUE/TASK_NAME`` destination: the event as the task's one positional
    argument, on the fleet's own broker (CELERY_BROKER_URL; a job names a queue and a
    task, never a broker), with the event's id as the task's id (a receiver's dedup key)."""
    app.send_task(task_name, args=[event], queue=queue, task_id=event_id)


def _deliverer(ports: Ports) -> Deliverer:
    """One per ports (its webhook and AWS clients are kept between runs)."""
    with _deliverer_guard:
        found = _deliverers.get(id(ports))
        if found is None:
            senders = default_senders(ports.settings.gvw_notify_timeout_s, send_event_task)
            found = Deliverer(ports.events.outbox, ports.settings, senders)
            _deliverers.clear()  # ports are built once per process: an older one is gone
            _deliverers[id(ports)] = found
        return found


@app.task(name=EVENTS_TASK_NAME, bind=True, max_retries=None)
def events_tick(self: Task, *_args: Any, **_kwargs: Any) -> bool:
    """One delivery run of the events outbox; schedules the next while deliveries wait.
    Any producer may send this message: a run is idempotent, and one runs at a time
    (a run that finds another running leaves the schedule to it)."""
    ports = _wired(runtime.get_ports())
    ran = True
    try:
        ran = _deliverer(ports).run_once() is not None
    except (GvwError, redis.RedisError) as err:
        log.warning("event delivery run failed; trying again later", extra={"error": str(err)})
    except Exception:  # a bug must not stop deliveries: logged, and the next run comes
        log.exception("event delivery run failed")
    if ran:
        try:
            at = ports.events.outbox.finish_run(now=time.time())
            if at is not None:
                _send_events_tick(at)
        except (GvwError, redis.RedisError, OperationalError):
            # the watch (EventsWatch) starts the runs again once Redis and the broker answer
            log.warning("could not schedule the next event delivery run", exc_info=True)
    return ran


def _send_events_tick(at: float) -> None:
    app.send_task(EVENTS_TASK_NAME, queue=QUEUE, countdown=max(0.0, at - time.time()))


def schedule_events_run(at: float | None = None) -> None:
    """A delivery run at ``at`` (now by default), unless one is scheduled by then."""
    ports = runtime.get_ports()
    now = time.time()
    when = now if at is None else at
    if ports.events.outbox.request_run(at=when, now=now):
        _send_events_tick(when)


def _watch_events() -> None:
    """Start delivery runs when deliveries wait and no run is scheduled in time: at a
    worker's start (a fleet restarted with events waiting), and when the chain of runs
    broke (a run's message lost with Redis, a killed worker)."""
    try:
        ports = runtime.get_ports()
        due = ports.events.outbox.next_due()
        if due is not None:
            schedule_events_run(max(due, time.time()))
    except (redis.RedisError, GvwError, OperationalError):
        log.warning("could not look for waiting events", exc_info=True)


class EventsWatch(bootsteps.StartStopStep):  # type: ignore[misc]
    """A consumer step: `_watch_events` at every (re)connection to the broker, and every
    `RUN_GRACE_S` (the time a lost run's schedule is forgotten) after."""

    requires: ClassVar[set[str]] = {"celery.worker.consumer.tasks:Tasks"}

    def __init__(self, parent: Any, **kwargs: Any) -> None:
        super().__init__(parent, **kwargs)
        self.timer_entry: Any = None

    def start(self, parent: Any) -> None:
        _watch_events()
        self.timer_entry = parent.timer.call_repeatedly(RUN_GRACE_S, _watch_events)

    def stop(self, parent: Any) -> None:
        if self.timer_entry is not None:
            self.timer_entry.cancel()
            self.timer_entry = None


app.steps["consumer"].add(EventsWatch)


def _task_label(task: str | None) -> str:
    # a producer controls the task name: only known ones become label values
    return task if task in registry.task_names() else "invalid"


def parse_job_id_fallback(task_id: str | None) -> str:
    if task_id and re.match(JOB_ID_PATTERN, task_id):
        return task_id
    return new_job_id()
