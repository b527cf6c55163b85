"""When to try a failed attempt again, and after how long.

Pure arithmetic, tested on its own. Countdowns stay below the broker's visibility
timeout (enforced by Settings): a message waiting out its countdown sits unacked in a
worker's memory and would be handed to a second worker past that timeout.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

from tasks.errors import (
    AttemptTimedOut,
    BudgetExhausted,
    DependencyUnavailable,
    GvwError,
    JobBusy,
    ModelOutputInvalid,
    ModelRateLimited,
)

# an outage's waits come back at least this often: a job finds the service back within
# this long of its return, however long it was down
OUTAGE_COUNTDOWN_MAX_S = 30.0


@dataclass(frozen=True)
class RetryPolicy:
    base_s: float
    max_s: float
    max_retries: int
    output_retries: int
    max_waits: int = 200
    max_timeouts: int = 2
    # GVW_OUTAGE_MAX_WAIT_S: how long a job waits for a service that is down
    max_outage_wait_s: float = 3600.0

    def should_retry(
        self,
        error: GvwError,
        retries_so_far: int,
        *,
        waits_so_far: int = 0,
        outage_s: float = 0.0,
    ) -> bool:
        """``retries_so_far`` counts every time the job went back to the queue;
        ``waits_so_far`` those that were waits (this one included when it is one), so
        waiting never uses up the retries of real failures; ``outage_s`` how long the
        job has waited, without a break, for the service that is down."""
        if not error.retryable:
            return False
        if isinstance(error, BudgetExhausted):
            # the day's budget: the wait ends when the next day opens, however long
            return True
        if is_outage(error):
            # not the job's fault: it waits for the service, up to the documented bound
            return outage_s <= self.max_outage_wait_s
        if is_waiting(error):
            # not a failure: another worker runs the job, or the fleet's rate is spent;
            # the job comes back until it can run (bounded against a stuck holder)
            return max(waits_so_far, 1) <= self.max_waits
        retries_so_far -= waits_so_far
        if isinstance(error, ModelOutputInvalid):
            return retries_so_far < self.output_retries
        if isinstance(error, AttemptTimedOut):
            # a job that always runs too long must not hold a slot max_retries times
            return retries_so_far < self.max_timeouts
        return retries_so_far < self.max_retries

    def countdown_s(
        self,
        error: GvwError,
        retries_so_far: int,
        rng: random.Random | None = None,
        *,
        outage_waits: int = 0,
    ) -> float:
        """Exponential backoff with jitter, never shorter than the server's retryDelay.
        An outage's waits (``outage_waits`` before this one) back off on their own count,
        capped at OUTAGE_COUNTDOWN_MAX_S."""
        uniform = rng.uniform if rng is not None else random.uniform
        if is_outage(error):
            return self.outage_countdown_s(outage_waits, rng)
        if isinstance(error, JobBusy):
            # the other worker will commit soon; come back quickly to find its result
            return min(self.max_s, 2.0 + uniform(0, 2.0))
        if is_waiting(error):
            # our own budget: come back when it frees, spread over a second
            wait_s = float(error.details.get("retry_after_s") or 1.0)
            return min(self.max_s, wait_s + uniform(0, 1.0))
        ceiling_s = min(self.max_s, self.base_s * (2**retries_so_far))
        # "equal jitter": half fixed, half random, so delays grow but workers spread out
        delay_s = ceiling_s / 2 + uniform(0, ceiling_s / 2)
        retry_after_s = error.details.get("retry_after_s")
        if isinstance(retry_after_s, int | float) and retry_after_s > 0:
            delay_s = max(delay_s, float(retry_after_s) + uniform(0, 0.5))
        return min(delay_s, self.max_s)

    def outage_countdown_s(self, outage_waits: int, rng: random.Random | None = None) -> float:
        """How long a job waiting for a service that is down stays away before it looks
        again: doubling from GVW_RETRY_BASE_S with its waits, up to 30 s, jittered."""
        uniform = rng.uniform if rng is not None else random.uniform
        ceiling_s = min(
            self.max_s, OUTAGE_COUNTDOWN_MAX_S, self.base_s * (2 ** min(outage_waits, 30))
        )
        return ceiling_s / 2 + uniform(0, ceiling_s / 2)


def is_outage(error: GvwError) -> bool:
    """A service the job needs is down: the job waits for it (GVW_OUTAGE_MAX_WAIT_S)."""
    return isinstance(error, DependencyUnavailable)


def is_waiting(error: GvwError) -> bool:
    """The job goes back to the queue without having failed."""
    return isinstance(error, JobBusy | BudgetExhausted) or (
        isinstance(error, ModelRateLimited) and bool(error.details.get("local"))
    )
