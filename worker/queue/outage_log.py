"""An outage in a handful of log lines: one when it starts, a count while it lasts, one
when it ends.

While storage, Gemini or the fleet's Redis is down, every job in flight (and every job
taken meanwhile) hits it, each retry again: logging each would write thousands of lines
for a few seconds of outage and bury what matters. Jobs report here instead; this
process writes one line when a dependency is first seen down, one summary per
``summary_every_s`` while it stays down, and one when a job gets through again.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass

from tasks.errors import GvwError

log = logging.getLogger(__name__)


@dataclass
class _Outage:
    since: float
    first_error: str
    waits: int = 0
    waits_since_summary: int = 0
    summary_at: float = 0.0


class OutageLog:
    def __init__(self, *, summary_every_s: float = 30.0) -> None:
        self._summary_every_s = summary_every_s
        self._down: dict[str, _Outage] = {}
        self._mutex = threading.Lock()

    def waiting(self, error: GvwError, *, job_id: str, countdown_s: float) -> None:
        """A job goes back to the queue to wait for ``error.dependency`` (the service a
        `DependencyUnavailable` or `RecordNotWritten` names)."""
        dependency = str(getattr(error, "dependency", "a service"))
        now = time.monotonic()
        line: tuple[str, dict[str, object]] | None = None
        with self._mutex:
            outage = self._down.get(dependency)
            if outage is None:
                self._down[dependency] = _Outage(now, error.message, 1, 0, now)
                line = (
                    f"{dependency} is down: jobs wait for it, their retries untouched",
                    {"job_id": job_id, "error_message": error.message},
                )
            else:
                outage.waits += 1
                outage.waits_since_summary += 1
                if now - outage.summary_at >= self._summary_every_s:
                    line = (
                        f"{dependency} still down after {now - outage.since:.0f} s: "
                        f"{outage.waits_since_summary} job waits in the last "
                        f"{now - outage.summary_at:.0f} s",
                        {"error_message": error.message},
                    )
                    outage.summary_at = now
                    outage.waits_since_summary = 0
        if line is not None:
            log.warning(line[0], extra={**line[1], "countdown_s": round(countdown_s, 2)})

    def through(self) -> None:
        """A job got through (it ended, or failed for a reason of its own): whatever was
        down is back."""
        if not self._down:  # the common case, without the lock
            return
        with self._mutex:
            ended, self._down = self._down, {}
        now = time.monotonic()
        for dependency, outage in ended.items():
            log.warning(
                f"{dependency} is back after {now - outage.since:.0f} s; "
                f"{outage.waits} job waits meanwhile"
            )


# one per process: what its jobs saw
OUTAGES = OutageLog()
