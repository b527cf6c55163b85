"""The runtime shell: queue, storage, Gemini, publishing.

`celery -A worker worker` finds the Celery app as ``worker.queue.app``. It is imported lazily
so that importing a light module (``worker.images.prepare``, ``worker.contract.jobs``) does not pull in
Celery and the whole runtime.
"""

from __future__ import annotations

from typing import Any


def __getattr__(name: str) -> Any:
    if name in ("app", "celery"):
        from worker.queue.app import app

        return app
    raise AttributeError(f"module 'worker' has no attribute {name!r}")
