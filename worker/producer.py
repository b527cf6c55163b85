"""Enqueue jobs as any producer would: Celery's `send_task`, nothing of the worker needed."""

from __future__ import annotations

from functools import lru_cache
from typing import Any

from celery import Celery

TASK_NAME = "vision.analyze"
QUEUE = "vision"


@lru_cache(maxsize=4)
def _producer(broker_url: str) -> Celery:
    return Celery("gvw-producer", broker=broker_url, set_as_current=False)


def send_job(job: dict[str, Any], *, broker_url: str | None = None) -> str:
    """Send one (already validated) job; the Celery task id is the job id."""
    if broker_url is None:
        from worker.settings import get_settings

        broker_url = get_settings().celery_broker_url
    job_id = str(job["job_id"])
    _producer(broker_url).send_task(TASK_NAME, args=[job], queue=QUEUE, task_id=job_id)
    return job_id
