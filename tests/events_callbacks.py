"""A second Celery app, the receiving end of ``celery:callbacks/tests.job_done``
destinations (tests/integration/test_events.py): a real `celery worker` of this app
consumes queue ``callbacks`` on the fleet's broker and appends each event it is given,
with its task id, as a JSON line to the file GVW_TEST_CALLBACKS_FILE names.
"""

from __future__ import annotations

import json
import os
from typing import Any

from celery import Celery, Task

app = Celery("callbacks", broker=os.environ.get("CELERY_BROKER_URL", "memory://"))
app.conf.update(
    task_serializer="json",
    accept_content=["json"],
    task_ignore_result=True,
    worker_hijack_root_logger=False,
)


@app.task(name="tests.job_done", bind=True)
def job_done(self: Task, event: dict[str, Any]) -> None:
    line = json.dumps({"task_id": self.request.id, "event": event})
    with open(os.environ["GVW_TEST_CALLBACKS_FILE"], "a", encoding="utf-8") as out:
        out.write(line + "\n")
