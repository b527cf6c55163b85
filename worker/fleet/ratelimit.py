"""One Gemini request budget for the whole fleet, kept in Redis on Redis's own clock.

Celery's `rate_limit` is per worker; a quota is per project. Every call to Gemini first
asks `acquire()`, which runs one Lua script (atomic on the server, `TIME` inside it, so
workers' clocks never disagree):

1. a fleet-wide cool-down: after a 429 carrying `retryDelay`, no worker calls Gemini
   until it has passed;
2. a sliding one-minute window of request timestamps: at most `rpm` calls in any 60 s,
   exactly, not on average.

A worker waits a few seconds at most for budget; past that it gives the job back to the
queue (`ModelRateLimited` with the wait), so a slot is never held for long.
"""

from __future__ import annotations

import time
import uuid
from typing import Protocol

import redis

from tasks.errors import ModelRateLimited

# KEYS[1] = window zset, KEYS[2] = cool-down key
# ARGV[1] = limit per minute (0 = no limit), ARGV[2] = a unique member id,
# ARGV[3] = the window in milliseconds
# returns the milliseconds to wait, 0 when a slot was taken
_ACQUIRE_LUA = """
local t = redis.call('TIME')
local now_ms = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local cool = redis.call('PTTL', KEYS[2])
if cool > 0 then
    return cool
end
local limit = tonumber(ARGV[1])
if limit <= 0 then
    return 0
end
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now_ms - tonumber(ARGV[3]))
if redis.call('ZCARD', KEYS[1]) < limit then
    redis.call('ZADD', KEYS[1], now_ms, ARGV[2])
    redis.call('PEXPIRE', KEYS[1], tonumber(ARGV[3]) + 1000)
    return 0
end
local oldest = redis.call('ZRANGE', KEYS[1], 0, 0, 'WITHSCORES')
return math.max(1, tonumber(oldest[2]) + tonumber(ARGV[3]) - now_ms)
"""

# KEYS[1] = cool-down key, ARGV[1] = milliseconds; only ever lengthens the cool-down
_COOL_DOWN_LUA = """
local ms = tonumber(ARGV[1])
if redis.call('PTTL', KEYS[1]) < ms then
    redis.call('SET', KEYS[1], '1', 'PX', ms)
    return 1
end
return 0
"""


# A minute plus a second: a request granted at t may reach Gemini a little after one
# granted at t + 60 s does; the margin keeps any 60 s window *at Gemini* within the limit.
_WINDOW_MS = 61_000


class RateLimiter(Protocol):
    def acquire(self, *, max_wait_s: float) -> None:
        """Take one request slot, waiting at most `max_wait_s`; else ModelRateLimited."""

    def cool_down(self, seconds: float) -> None:
        """No worker calls Gemini for `seconds` (a 429's retryDelay)."""


class RedisRateLimiter:
    def __init__(self, client: redis.Redis, *, project: str, requests_per_minute: int) -> None:
        self._rpm = requests_per_minute
        self._window_key = f"gvw:ratelimit:{project}:window"
        self._cool_key = f"gvw:ratelimit:{project}:cooldown"
        self._acquire = client.register_script(_ACQUIRE_LUA)
        self._cool = client.register_script(_COOL_DOWN_LUA)

    def wait_ms(self) -> int:
        """Try once: 0 if a slot was taken, else how long until one may be free."""
        return int(
            self._acquire(
                keys=[self._window_key, self._cool_key],
                args=[self._rpm, uuid.uuid4().hex, _WINDOW_MS],
            )
        )

    def acquire(self, *, max_wait_s: float) -> None:
        deadline = time.monotonic() + max_wait_s
        while True:
            wait_ms = self.wait_ms()
            if wait_ms == 0:
                return
            remaining_s = deadline - time.monotonic()
            if wait_ms / 1000 > remaining_s:
                raise ModelRateLimited(
                    f"fleet-wide Gemini budget exhausted for {wait_ms / 1000:.1f} s",
                    retry_after_s=wait_ms / 1000,
                    local=True,
                )
            time.sleep(wait_ms / 1000)

    def cool_down(self, seconds: float) -> None:
        if seconds > 0:
            self._cool(keys=[self._cool_key], args=[int(seconds * 1000)])


class NoRateLimit:
    """For `gvw demo` and single processes without Redis: only the cool-down, in memory."""

    def __init__(self) -> None:
        self._until = 0.0

    def acquire(self, *, max_wait_s: float) -> None:
        wait_s = self._until - time.monotonic()
        if wait_s <= 0:
            return
        if wait_s > max_wait_s:
            raise ModelRateLimited("cooling down after a 429", retry_after_s=wait_s, local=True)
        time.sleep(wait_s)

    def cool_down(self, seconds: float) -> None:
        self._until = max(self._until, time.monotonic() + seconds)
