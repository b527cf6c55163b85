"""The fleet's one lock: a key holding a random token, short-lived, renewed while held.

Every lock of the fleet is this one (a job's lock, an upload's, the answer cache's lead,
the batch follower's): taken with SET NX PX, and renewed or released only by a script that
first compares the token, so a holder whose lock expired and was taken by another can
neither extend nor delete the new holder's lock (a GET then DEL can). `held` renews it at
a third of its life while the holder runs: a holder that dies stops renewing, and the
lock is free again within its TTL, however long a live holder keeps it.

`RedisTokenLocks` and the in-memory `LocalTokenLocks` (for `gvw demo` and single
processes) pass the same contract tests (tests/unit/test_token_lock.py).
"""

from __future__ import annotations

import contextlib
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any, Protocol

import redis

from tasks.errors import FleetUnavailable

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
# a renewal, or a release, that does not reach Redis is left to the TTL
_TOLERATED = (redis.RedisError, FleetUnavailable)


class TokenLocks(Protocol):
    def acquire(self, key: str, ttl_s: float, token: str | None = None) -> str | None:
        """The lock's token when it was free (``token`` if given), else None."""
        ...

    def renew(self, key: str, token: str, ttl_s: float) -> bool:
        """Extend the lock to ``ttl_s`` from now if ``token`` still holds it."""
        ...

    def release(self, key: str, token: str) -> None:
        """Free the lock if ``token`` still holds it."""
        ...


def _ttl_ms(ttl_s: float) -> int:
    return max(1, int(ttl_s * 1000))


class RedisTokenLocks:
    def __init__(self, client: Any) -> None:
        self._redis = client
        self._release = client.register_script(_RELEASE_LUA)
        self._renew = client.register_script(_RENEW_LUA)

    def acquire(self, key: str, ttl_s: float, token: str | None = None) -> str | None:
        token = token or uuid.uuid4().hex
        return token if self._redis.set(key, token, nx=True, px=_ttl_ms(ttl_s)) else None

    def renew(self, key: str, token: str, ttl_s: float) -> bool:
        return bool(self._renew(keys=[key], args=[token, _ttl_ms(ttl_s)]))

    def release(self, key: str, token: str) -> None:
        self._release(keys=[key], args=[token])


class LocalTokenLocks:
    """In memory, with the same expiry: for one process without Redis."""

    def __init__(self) -> None:
        self._held: dict[str, tuple[str, float]] = {}
        self._mutex = threading.Lock()

    def acquire(self, key: str, ttl_s: float, token: str | None = None) -> str | None:
        now = time.monotonic()
        with self._mutex:
            holder = self._held.get(key)
            if holder is not None and holder[1] > now:
                return None
            token = token or uuid.uuid4().hex
            self._held[key] = (token, now + ttl_s)
            return token

    def renew(self, key: str, token: str, ttl_s: float) -> bool:
        now = time.monotonic()
        with self._mutex:
            holder = self._held.get(key)
            if holder is None or holder[0] != token or holder[1] <= now:
                return False
            self._held[key] = (token, now + ttl_s)
            return True

    def release(self, key: str, token: str) -> None:
        with self._mutex:
            holder = self._held.get(key)
            if holder is not None and holder[0] == token:
                del self._held[key]


@contextmanager
def held(locks: TokenLocks, key: str, ttl_s: float, *, renew: bool = True) -> Iterator[str | None]:
    """Hold ``key`` for the block: yields the token, or None when another holds it. With
    ``renew``, a heartbeat renews it at a third of ``ttl_s`` until the block ends; the
    release at the end is atomic (only our token's lock is deleted)."""
    token = locks.acquire(key, ttl_s)
    if token is None:
        yield None
        return
    stop = threading.Event()
    heartbeat = None
    if renew:
        heartbeat = threading.Thread(
            target=_keep_alive,
            args=(locks, key, token, ttl_s, stop),
            name=f"gvw-lock-{key[-40:]}",
            daemon=True,
        )
        heartbeat.start()
    try:
        yield token
    finally:
        stop.set()
        if heartbeat is not None:
            heartbeat.join(timeout=5)
        with contextlib.suppress(*_TOLERATED):  # else it expires within its TTL
            locks.release(key, token)


def _keep_alive(
    locks: TokenLocks, key: str, token: str, ttl_s: float, stop: threading.Event
) -> None:
    # two missed beats still leave the lock held
    while not stop.wait(ttl_s / 3):
        try:
            if not locks.renew(key, token, ttl_s):
                return  # lost it (expired during a long pause): nothing left to keep
        except _TOLERATED:
            continue  # Redis briefly away: try again on the next beat
