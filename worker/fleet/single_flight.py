"""Single flight: of identical callers across the fleet, one does the work, the rest wait.

Its one job is the waiting rule that the File API cache (`worker.fleet.file_cache`: one
upload per image) and the answer cache (`worker.fleet.answer_cache`: one model call per
request) share, so that both keep the same promises:

- a caller that finds the result (the caller's ``get``) takes it, and takes no lead;
- otherwise the first caller to take the key's lead does the work, and must `release`
  the lead once it has stored the result or given up;
- the others wait for the result, polling with a growing pause (50 ms, times 1.5, at
  most 1 s), for at most ``wait_s``;
- a leader that fails releases its lead and a waiter takes it over; a leader that dies
  releases nothing, and its lead frees itself when ``ttl_s`` runs out, so a waiter
  takes it over then (when ``wait_s`` outlasts it);
- the lead is taken before a last look for the result, so a caller arriving just as the
  leader finishes uses its result instead of doing the work again.

Why one place: these are the rules that decide how often the fleet pays for the same
thing twice and how long a duplicate can be held up; written twice they drift apart.
The lead is the fleet's token lock (`worker.fleet.token_lock`), so the same rule runs on
Redis (a fleet) and in memory (one process). What a caller does with a timeout (asks the
model too, or gives the job back to the queue) stays with the caller.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Generic, TypeVar

from worker.fleet.token_lock import TokenLocks

T = TypeVar("T")

# the pause between two looks while another caller leads: short at first (most work
# finishes soon), growing so that a long wait costs few round trips
FIRST_PAUSE_S = 0.05
PAUSE_GROWTH = 1.5
MAX_PAUSE_S = 1.0


@dataclass(frozen=True)
class Flight(Generic[T]):
    """What `SingleFlight.wait_or_lead` came back with: the result (``found``), or the
    lead (``lead_token``: this caller does the work and must `SingleFlight.release` it),
    or neither (another caller still led when the wait ran out)."""

    found: T | None = None
    lead_token: str | None = None


class SingleFlight:
    """The waiting rule over leads named ``prefix + key`` in ``locks``."""

    def __init__(self, locks: TokenLocks, *, prefix: str = "") -> None:
        self._locks = locks
        self._prefix = prefix

    def lead(self, key: str, ttl_s: float, token: str | None = None) -> str | None:
        """Take the key's lead for ``ttl_s`` if nobody holds it: its token, else None."""
        return self._locks.acquire(self._prefix + key, ttl_s, token)

    def release(self, key: str, token: str) -> None:
        """Give the lead up (only while ``token`` still holds it)."""
        self._locks.release(self._prefix + key, token)

    def wait_or_lead(
        self,
        key: str,
        get: Callable[[], T | None],
        *,
        ttl_s: float,
        wait_s: float,
        on_wait: Callable[[], None] | None = None,
        clip_pause_to_deadline: bool = True,
    ) -> Flight[T]:
        """The result, the lead, or neither after ``wait_s`` (see the module's rules).

        ``get`` looks for the result (None: not there yet). ``on_wait`` is called once,
        the first time another caller holds the lead. With ``clip_pause_to_deadline``
        the last pause ends at the deadline; without it, every pause is taken whole (the
        last look may then come up to `MAX_PAUSE_S` after ``wait_s``).
        """
        deadline = time.monotonic() + wait_s
        pause_s = FIRST_PAUSE_S
        token = uuid.uuid4().hex
        waited = False
        while True:
            found = get()
            if found is not None:
                return Flight(found=found)
            if self.lead(key, ttl_s, token) is not None:
                # the leader before us may have stored it between our look and our lead
                try:
                    found = get()
                except BaseException:
                    self.release(key, token)
                    raise
                if found is not None:
                    self.release(key, token)
                    return Flight(found=found)
                return Flight(lead_token=token)
            if not waited:
                waited = True
                if on_wait is not None:
                    on_wait()
            if time.monotonic() >= deadline:
                return Flight()
            if clip_pause_to_deadline:
                time.sleep(min(pause_s, max(0.0, deadline - time.monotonic())))
            else:
                time.sleep(pause_s)
            pause_s = min(pause_s * PAUSE_GROWTH, MAX_PAUSE_S)
