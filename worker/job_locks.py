"""A lock per job, so two live workers do not pay for the same model call at once.

It only saves money: correctness rests on the conditional create of result.json, so an
expired or lost lock can at worst cost one duplicate call, never a second result.

The Redis lock is short-lived and renewed by a heartbeat while its holder runs: a worker
that dies (SIGKILL, OOM) stops renewing, and its lock is free again within `ttl_s`, so
the redelivered job runs within seconds instead of waiting out a long lock.
"""

from __future__ import annotations

import contextlib
import threading
import uuid
from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager
from typing import Protocol

import redis

from tasks.errors import FleetUnavailable

# Delete or extend the key only if it still holds our token: a lock that expired and was
# taken by another worker must not be released or extended by the first one.
_RELEASE_LUA = """
if redis.call('get', KEYS[1]) == ARGV[1] then
    return redis.call('del', KEYS[1])
end
return 0
"""
_RENEW_LUA = """
if redis.call('get', KEYS[1]) == ARGV[1] then
    return redis.call('pexpire', KEYS[1], ARGV[2])
end
return 0
"""


class JobLocks(Protocol):
    def hold(self, job_id: str) -> AbstractContextManager[bool]:
        """Context manager yielding True if this caller holds the job's lock."""
        ...


class RedisJobLocks:
    def __init__(
        self, client: redis.Redis, *, ttl_s: float = 15.0, prefix: str = "gvw:lock:job:"
    ) -> None:
        self._redis = client
        self._ttl_ms = max(1000, int(ttl_s * 1000))
        self._prefix = prefix
        self._release = client.register_script(_RELEASE_LUA)
        self._renew = client.register_script(_RENEW_LUA)

    @contextmanager
    def hold(self, job_id: str) -> Iterator[bool]:
        key = self._prefix + job_id
        token = uuid.uuid4().hex
        acquired = bool(self._redis.set(key, token, nx=True, px=self._ttl_ms))
        if not acquired:
            yield False
            return
        stop = threading.Event()
        heartbeat = threading.Thread(
            target=self._keep_alive,
            args=(key, token, stop),
            name=f"gvw-lock-{job_id}",
            daemon=True,
        )
        heartbeat.start()
        try:
            yield True
        finally:
            stop.set()
            heartbeat.join(timeout=5)
            with contextlib.suppress(redis.RedisError, FleetUnavailable):  # else it expires in TTL
                self._release(keys=[key], args=[token])

    def _keep_alive(self, key: str, token: str, stop: threading.Event) -> None:
        # renew at a third of the TTL: two missed beats still leave the lock held
        while not stop.wait(self._ttl_ms / 3000):
            try:
                if not self._renew(keys=[key], args=[token, self._ttl_ms]):
                    return  # lost it (expired during a long pause): nothing to keep
            except (redis.RedisError, FleetUnavailable):
                continue  # Redis briefly away: try again on the next beat


class LocalJobLocks:
    """In-process locks for `gvw demo` and single-process use, where there is no Redis."""

    def __init__(self) -> None:
        self._held: set[str] = set()
        self._mutex = threading.Lock()

    @contextmanager
    def hold(self, job_id: str) -> Iterator[bool]:
        with self._mutex:
            acquired = job_id not in self._held
            if acquired:
                self._held.add(job_id)
        try:
            yield acquired
        finally:
            if acquired:
                with self._mutex:
                    self._held.discard(job_id)
