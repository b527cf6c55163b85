"""Delivery accounting, in Redis: how often a job's attempt was delivered, waited, or
ran past its time limit.

With `task_reject_on_worker_lost`, a job whose run kills its worker (out of memory, a
segfault in a decoder) comes back forever. Each delivery of a job's attempt is counted
here; past `max_deliveries` the job is dead-lettered (`worker.fleet.dead_letters`)
instead of run again. Celery's own retries are separate attempts with their own count
(`request.retries` is in the key).

    gvw:deliveries:{job_id}:{retries}   delivery count of one attempt (expires)
    gvw:deliveries:{job_id}:-1          times the job waited (went back to the queue
                                        without failing): not counted against retries
    gvw:deliveries:{job_id}:timeouts:0  times the job was killed at its hard time limit
"""

from __future__ import annotations

from typing import Protocol

import redis

# the "retries" slot of the waits counter: no attempt has this number
_WAITS = -1


class Deliveries(Protocol):
    def count(self, job_id: str, retries: int) -> int:
        """One more delivery of the job's attempt ``retries``; the total so far."""
        ...

    def clear(self, job_id: str, retries: int) -> None:
        """The attempt ended in this worker's hands: its deliveries start again at 0."""
        ...

    def count_wait(self, job_id: str) -> int:
        """One more time the job went back to the queue without failing (another worker
        held it, the fleet's rate or budget had no room); the total so far."""
        ...

    def waits(self, job_id: str) -> int: ...
    def count_timeout(self, job_id: str) -> int:
        """One more time the job's run was killed at the hard time limit; the total."""
        ...

    def forget(self, job_id: str) -> None:
        """Every count of the job (a dead letter replayed starts afresh)."""
        ...


class RedisDeliveries:
    def __init__(self, client: redis.Redis, *, ttl_s: int = 24 * 3600) -> None:
        self._redis = client
        self._ttl_s = ttl_s

    def count(self, job_id: str, retries: int) -> int:
        return self._incr(f"gvw:deliveries:{job_id}:{retries}")

    def clear(self, job_id: str, retries: int) -> None:
        self._redis.delete(f"gvw:deliveries:{job_id}:{retries}")

    def count_wait(self, job_id: str) -> int:
        return self.count(job_id, _WAITS)

    def waits(self, job_id: str) -> int:
        return int(self._redis.get(f"gvw:deliveries:{job_id}:{_WAITS}") or 0)  # type: ignore[arg-type]

    def count_timeout(self, job_id: str) -> int:
        # the key of the counter this was before it had a name of its own
        return self._incr(f"gvw:deliveries:{job_id}:timeouts:0")

    def forget(self, job_id: str) -> None:
        keys = list(self._redis.scan_iter(match=f"gvw:deliveries:{job_id}:*", count=100))
        if keys:
            self._redis.delete(*keys)

    def _incr(self, key: str) -> int:
        pipe = self._redis.pipeline()
        pipe.incr(key)
        pipe.expire(key, self._ttl_s)
        value, _ = pipe.execute()
        return int(value)


class LocalDeliveries:
    """In memory, for `gvw demo` and single processes without Redis."""

    def __init__(self) -> None:
        self._counts: dict[tuple[str, int | str], int] = {}

    def count(self, job_id: str, retries: int) -> int:
        return self._incr((job_id, retries))

    def clear(self, job_id: str, retries: int) -> None:
        self._counts.pop((job_id, retries), None)

    def count_wait(self, job_id: str) -> int:
        return self.count(job_id, _WAITS)

    def waits(self, job_id: str) -> int:
        return self._counts.get((job_id, _WAITS), 0)

    def count_timeout(self, job_id: str) -> int:
        return self._incr((job_id, "timeouts"))

    def forget(self, job_id: str) -> None:
        for key in [k for k in self._counts if k[0] == job_id]:
            del self._counts[key]

    def _incr(self, key: tuple[str, int | str]) -> int:
        self._counts[key] = self._counts.get(key, 0) + 1
        return self._counts[key]
