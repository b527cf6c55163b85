"""Enqueue jobs as any producer would: Celery's `send_task`, nothing of the worker needed.

Sending touches the broker only: no result backend (the job's record in storage is its
result), and a broker that cannot be reached is a `BrokerUnavailable` within seconds,
naming the broker with its password hidden, not a long wait and an empty error.
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import lru_cache
from typing import Any

from celery import Celery
from kombu.exceptions import OperationalError
from kombu.utils.url import maybe_sanitize_url

from worker.contract.names import QUEUE, TASK_NAME

# seconds: a broker that does not answer this fast is reported, not waited for
_CONNECT_TIMEOUT_S = 3.0
_PUBLISH_RETRY_POLICY = {
    "max_retries": 2,
    "interval_start": 0,
    "interval_step": 0.5,
    "interval_max": 1.0,
}


class BrokerUnavailable(RuntimeError):
    """The broker cannot be reached: the message says which one (no password) and why."""


class _Producer(Celery):  # type: ignore[misc]
    """A Celery app that sends and never reads results: its result backend is disabled
    whatever CELERY_RESULT_BACKEND says (Celery reads that variable ahead of its own
    configuration), so sending never waits on a result store. Workers still record task
    states there for those who look."""

    def _get_backend(self) -> Any:
        from celery.backends.base import DisabledBackend

        return DisabledBackend(app=self)


@lru_cache(maxsize=4)
def _producer(broker_url: str) -> Celery:
    app = _Producer("gvw-producer", broker=broker_url, set_as_current=False)
    app.conf.update(
        # Celery reads CELERY_BROKER_URL ahead of its own configuration: a producer told
        # to use one broker must not silently use another
        broker_url=broker_url,
        broker_connection_timeout=_CONNECT_TIMEOUT_S,
        broker_connection_retry_on_startup=False,
        broker_transport_options={
            "socket_connect_timeout": _CONNECT_TIMEOUT_S,
            "socket_timeout": 10.0,
        },
        task_publish_retry_policy=_PUBLISH_RETRY_POLICY,
    )
    return app


def send_job(job: dict[str, Any], *, broker_url: str | None = None) -> str:
    """Send one (already validated) job; the Celery task id is the job id."""
    if broker_url is None:
        from worker.settings import get_settings

        broker_url = get_settings().celery_broker_url
    job_id = str(job["job_id"])
    app = _producer(broker_url)
    try:
        app.send_task(
            TASK_NAME,
            args=[job],
            queue=QUEUE,
            task_id=job_id,
        )
    except (OperationalError, OSError) as exc:
        raise BrokerUnavailable(
            f"cannot reach the broker at {maybe_sanitize_url(broker_url)} "
            f"({_reason(exc)}): is it running, and is CELERY_BROKER_URL right?"
        ) from exc
    return job_id


def send_jobs(jobs: Sequence[dict[str, Any]], *, broker_url: str | None = None) -> None:
    """Send many (already validated) jobs at once: on a Redis broker, kombu's publish
    batch pushes them in pipelined groups (one round trip per group, not per job);
    other brokers get one publish each, as with `send_job`."""
    if not jobs:
        return
    if broker_url is None:
        from worker.settings import get_settings

        broker_url = get_settings().celery_broker_url
    app = _producer(broker_url)
    try:
        with app.producer_or_acquire() as producer, producer.batch(max_size=_SEND_GROUP):
            for job in jobs:
                app.send_task(
                    TASK_NAME,
                    args=[job],
                    queue=QUEUE,
                    task_id=str(job["job_id"]),
                    producer=producer,
                )
    except (OperationalError, OSError) as exc:
        raise BrokerUnavailable(
            f"cannot reach the broker at {maybe_sanitize_url(broker_url)} "
            f"({_reason(exc)}): is it running, and is CELERY_BROKER_URL right?"
        ) from exc


# jobs pushed per pipelined round trip: a few hundred KB of messages
_SEND_GROUP = 500


def _reason(exc: BaseException) -> str:
    text = " ".join(str(exc).split()) or type(exc).__name__
    return text[:200]
