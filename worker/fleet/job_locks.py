"""A lock per job, so two live workers do not pay for the same model call at once.

It only saves money: correctness rests on the conditional create of result.json, so an
expired or lost lock can at worst cost one duplicate call, never a second result.

The lock is the fleet's token lock (`worker.fleet.token_lock`): short-lived and renewed by a
heartbeat while its holder runs, so a worker that dies (SIGKILL, OOM) stops renewing, and
its job is free to run again within `ttl_s` instead of waiting out a long lock.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager
from typing import Any, Protocol

from worker.fleet.token_lock import LocalTokenLocks, RedisTokenLocks, TokenLocks, held


class JobLocks(Protocol):
    def hold(self, job_id: str) -> AbstractContextManager[bool]:
        """Context manager yielding True if this caller holds the job's lock."""
        ...


class TokenJobLocks:
    """Job locks over any `TokenLocks` (Redis for a fleet, in memory for one process)."""

    def __init__(
        self, locks: TokenLocks, *, ttl_s: float = 15.0, prefix: str = "gvw:lock:job:"
    ) -> None:
        self._locks = locks
        self._ttl_s = max(1.0, ttl_s)
        self._prefix = prefix

    @contextmanager
    def hold(self, job_id: str) -> Iterator[bool]:
        with held(self._locks, self._prefix + job_id, self._ttl_s) as token:
            yield token is not None


class RedisJobLocks(TokenJobLocks):
    """Job locks in the fleet's Redis."""

    def __init__(self, client: Any, *, ttl_s: float = 15.0, prefix: str = "gvw:lock:job:") -> None:
        super().__init__(RedisTokenLocks(client), ttl_s=ttl_s, prefix=prefix)


class LocalJobLocks(TokenJobLocks):
    """In-process job locks for `gvw demo` and single-process use, where there is no Redis."""

    def __init__(self, *, ttl_s: float = 15.0) -> None:
        super().__init__(LocalTokenLocks(), ttl_s=ttl_s)
