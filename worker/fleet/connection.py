"""The fleet's Redis client (GVW_REDIS_URL): a Redis that does not answer is the
project's own `FleetUnavailable`, translated here, at the one place every fleet adapter's
commands pass through (locks, claims, deliveries, answers, caches, rate limit, budget,
batch state).

Callers then treat it as what it is: the job is not at fault, it waits for Redis
(`tasks.errors.DependencyUnavailable`), instead of ending as "unexpected error" /
``internal``. Errors that are answers (a wrong type, a script error) stay redis-py's: they
are bugs, not outages.
"""

from __future__ import annotations

from typing import Any

import redis
from redis.client import Pipeline

from tasks.errors import FleetUnavailable

# what Redis being away looks like: no connection, no answer in time, still loading its
# data after a restart (BusyLoadingError is a ConnectionError), a replica after failover
_AWAY = (redis.ConnectionError, redis.TimeoutError, redis.ReadOnlyError)


def _translated(exc: redis.RedisError) -> FleetUnavailable:
    text = " ".join(str(exc).split())[:200] or type(exc).__name__
    return FleetUnavailable(f"the fleet's Redis (GVW_REDIS_URL) does not answer: {text}")


def _is_away(exc: redis.RedisError) -> bool:
    # a Redis out of memory refuses writes (maxmemory with noeviction): the fleet's
    # trouble, not the job's
    return isinstance(exc, _AWAY) or (
        isinstance(exc, redis.ResponseError) and str(exc).startswith("OOM")
    )


class _Translating:
    def execute_command(self, *args: Any, **options: Any) -> Any:
        try:
            return super().execute_command(*args, **options)  # type: ignore[misc]
        except redis.RedisError as exc:
            if _is_away(exc):
                raise _translated(exc) from exc
            raise


class FleetPipeline(_Translating, Pipeline):  # type: ignore[misc]
    def execute(self, raise_on_error: bool = True) -> list[Any]:
        try:
            return super().execute(raise_on_error)
        except redis.RedisError as exc:
            if _is_away(exc):
                raise _translated(exc) from exc
            raise


class FleetRedis(_Translating, redis.Redis):  # type: ignore[misc]
    def pipeline(self, transaction: bool = True, shard_hint: Any = None) -> FleetPipeline:
        return FleetPipeline(self.connection_pool, self.response_callbacks, transaction, shard_hint)


def fleet_client(url: str, **options: Any) -> FleetRedis:
    """A client of the fleet's Redis at ``url`` whose outages raise FleetUnavailable."""
    client = FleetRedis.from_url(url, **options)
    assert isinstance(client, FleetRedis)
    return client
