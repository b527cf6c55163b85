"""No message on the queue can stop a worker.

Celery's consumer trusts a task message's shape: a `vision.analyze` message whose body is
a JSON string instead of the ``[args, kwargs, embed]`` triple, or whose task name is a
list, raises inside Celery's own request handling, the worker process exits, the message
goes back to the queue, and every worker that takes it exits too: the whole fleet in a
crash loop. `GuardedConsumer` (the app's ``worker_consumer``) checks each message's shape
before Celery reads it, and turns anything malformed into a refusal: the message is
acknowledged (rejected without requeue), logged, and recorded like an invalid job (a
dead-letter entry where a job id can be read, an error.json where an output can be
determined). The worker keeps serving.

What the shape check leaves to the task itself, which records it with the job at hand:
the number of arguments and unexpected keyword arguments (`worker.queue.app.analyze`).
"""

from __future__ import annotations

import logging
import re
from typing import Any

from celery.worker.consumer import Consumer

from tasks.errors import InvalidJob, RecordNotWritten
from worker.contract.jobs import JOB_ID_PATTERN
from worker.contract.names import TASK_NAME
from worker.observability import JOBS

log = logging.getLogger(__name__)

_OPTIONAL_TEXT_HEADERS = ("eta", "expires", "shadow", "root_id", "parent_id", "group")
_EMBED_LISTS = ("callbacks", "errbacks", "chain")


def message_problem(message: Any) -> str | None:
    """Why this message is not a task message Celery can safely take, or None."""
    headers = message.headers
    if not isinstance(headers, dict):
        return f"headers are a {type(headers).__name__}, not a mapping"
    task = headers.get("task")
    if task is None:
        body = _decoded(message)
        if isinstance(body, dict) and body.get("task") == TASK_NAME:
            return "task protocol 1 messages are not accepted (send with Celery's protocol 2)"
        return None  # not a task message at all: Celery logs and rejects it
    if not isinstance(task, str):
        return f"the task name is a {type(task).__name__}, not a string"
    task_id = headers.get("id")
    if not isinstance(task_id, str) or not task_id:
        return "no task id in the headers"
    for name in _OPTIONAL_TEXT_HEADERS:
        if headers.get(name) is not None and not isinstance(headers[name], str):
            return f"header {name!r} is not a string"
    retries = headers.get("retries")
    if retries is not None and (not _is_int(retries) or retries < 0):
        return "header 'retries' is not a non-negative integer"
    timelimit = headers.get("timelimit")
    if timelimit is not None and not (
        isinstance(timelimit, list | tuple)
        and len(timelimit) == 2
        and all(v is None or (_is_number(v) and v >= 0) for v in timelimit)
    ):
        return "header 'timelimit' is not [soft, hard] seconds"
    if task != TASK_NAME:
        return None  # another task: Celery refuses names it does not know
    try:
        body = message.decode()
    except Exception as exc:
        return f"the body cannot be decoded ({type(exc).__name__}: {str(exc)[:200]})"
    if not isinstance(body, list | tuple) or len(body) != 3:
        shown = type(body).__name__ if not isinstance(body, list) else f"list of {len(body)}"
        return f"the body is a {shown}, not the [args, kwargs, embed] triple of a task message"
    args, kwargs, embed = body
    if not isinstance(args, list | tuple):
        return f"args is a {type(args).__name__}, not a list"
    if not isinstance(kwargs, dict):
        return f"kwargs is a {type(kwargs).__name__}, not an object"
    if embed is not None and not isinstance(embed, dict):
        return f"embed is a {type(embed).__name__}, not an object"
    embedded: dict[str, Any] = embed or {}
    for name in _EMBED_LISTS:
        if embedded.get(name) is not None and not isinstance(embedded[name], list):
            return f"embed.{name} is not a list"
    if embedded.get("chord") is not None and not isinstance(embedded["chord"], dict):
        return "embed.chord is not an object"
    return None


class GuardedConsumer(Consumer):  # type: ignore[misc]
    """Celery's consumer with every incoming message's shape checked first."""

    def create_task_handler(self, *args: Any, **kwargs: Any) -> Any:
        handle = super().create_task_handler(*args, **kwargs)
        connection_errors = tuple(self.connection_errors or ())

        def on_task_received(message: Any) -> Any:
            problem = message_problem(message)
            if problem is None:
                try:
                    return handle(message)
                except connection_errors:
                    raise  # the broker is gone: Celery reconnects
                except Exception as exc:
                    if message.acknowledged:
                        log.exception("error after a task message was taken")
                        return None
                    problem = f"Celery could not take it ({type(exc).__name__}: {exc})"
            refuse_message(message, problem[:500], connection_errors)
            return None

        return on_task_received


def refuse_message(message: Any, problem: str, connection_errors: tuple[Any, ...]) -> None:
    headers = message.headers if isinstance(message.headers, dict) else {}
    task_id = headers.get("id")
    job = _first_argument(message)
    job_id = _job_id(job, task_id)
    log.warning(
        "malformed task message refused",
        extra={"job_id": job_id, "task_id": str(task_id)[:200], "problem": problem},
    )
    JOBS.labels("invalid", "failed").inc()
    try:
        _record(job_id, job, problem)
    except Exception:  # the log line above is then the only record: keep serving
        log.exception("could not record a malformed task message", extra={"job_id": job_id})
    try:
        message.reject_log_error(log, connection_errors)
    except connection_errors:
        raise
    except Exception:
        log.exception("could not reject a malformed task message")


def _record(job_id: str | None, job: Any, problem: str) -> None:
    if job_id is None:
        return  # nothing to key a dead letter or an error record by
    from worker import runtime
    from worker.contract.jobs import salvage_identity
    from worker.pipeline.failures import publish_error

    _, output = salvage_identity(job)
    try:
        publish_error(
            runtime.get_ports(),
            job_id=job_id,
            task=task_label(job),
            output=output,
            error=InvalidJob(f"malformed task message: {problem}"),
            attempts=1,
            job=job,
        )
    except RecordNotWritten:
        # the dead-letter entry holds the record; a rejected message cannot come back
        log.error("malformed task message: storage did not take its error record")


def _first_argument(message: Any) -> Any:
    body = _decoded(message)
    if isinstance(body, list | tuple) and body and isinstance(body[0], list | tuple) and body[0]:
        return body[0][0]
    return body if isinstance(body, dict) and "task" not in body else None


def _decoded(message: Any) -> Any:
    try:
        return message.decode()
    except Exception:
        return None


def _job_id(job: Any, task_id: Any) -> str | None:
    own = job.get("job_id") if isinstance(job, dict) else None
    for candidate in (own, task_id):
        if isinstance(candidate, str) and re.match(JOB_ID_PATTERN, candidate):
            return candidate
    return None


def task_label(job: Any) -> str | None:
    task = job.get("task") if isinstance(job, dict) else None
    return task if isinstance(task, str) and len(task) <= 32 else None


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)
