"""Delivery accounting and the dead-letter index, in Redis.

With `task_reject_on_worker_lost`, a job whose run kills its worker (out of memory, a
segfault in a decoder) comes back forever. Each delivery of a job's attempt is counted
here; past `max_deliveries` the job is dead-lettered instead of run again. Celery's own
retries are separate attempts with their own count (`request.retries` is in the key).

Redis has no dead-letter queue: a rejected message is gone. Dead letters are the job's
error.json plus an entry here, which is what `gvw dead-letters list | replay` reads.

    gvw:deliveries:{job_id}:{retries}   delivery count of one attempt (expires)
    gvw:dead_letters                    zset job_id -> when (epoch s)
    gvw:dead_letter:{job_id}            hash: code, message, attempts, when, job (JSON)
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, Protocol

import redis

_INDEX = "gvw:dead_letters"


@dataclass(frozen=True)
class DeadLetter:
    job_id: str
    code: str
    message: str
    attempts: int
    when: float
    job: dict[str, Any] | None


class Deliveries(Protocol):
    def count(self, job_id: str, retries: int) -> int: ...
    def forget(self, job_id: str) -> None: ...
    def clear(self, job_id: str, retries: int) -> None: ...
    def dead_letter(
        self, job_id: str, *, code: str, message: str, attempts: int, job: Any
    ) -> None: ...
    def dead_letters(self, limit: int = 100) -> Iterator[DeadLetter]: ...
    def get(self, job_id: str) -> DeadLetter | None: ...
    def remove(self, job_id: str) -> None: ...


class RedisDeliveries:
    def __init__(self, client: redis.Redis, *, ttl_s: int = 24 * 3600) -> None:
        self._redis = client
        self._ttl_s = ttl_s

    def count(self, job_id: str, retries: int) -> int:
        key = f"gvw:deliveries:{job_id}:{retries}"
        pipe = self._redis.pipeline()
        pipe.incr(key)
        pipe.expire(key, self._ttl_s)
        value, _ = pipe.execute()
        return int(value)

    def clear(self, job_id: str, retries: int) -> None:
        self._redis.delete(f"gvw:deliveries:{job_id}:{retries}")

    def forget(self, job_id: str) -> None:
        keys = list(self._redis.scan_iter(match=f"gvw:deliveries:{job_id}:*", count=100))
        if keys:
            self._redis.delete(*keys)

    def dead_letter(self, job_id: str, *, code: str, message: str, attempts: int, job: Any) -> None:
        now = time.time()
        record: dict[str | bytes, str] = {
            "code": code,
            "message": message[:2000],
            "attempts": str(attempts),
            "when": str(now),
            "job": json.dumps(job) if isinstance(job, dict) else "",
        }
        pipe = self._redis.pipeline()
        pipe.hset(f"gvw:dead_letter:{job_id}", mapping=record)
        pipe.expire(f"gvw:dead_letter:{job_id}", 30 * 24 * 3600)
        pipe.zadd(_INDEX, {job_id: now})
        pipe.execute()

    def dead_letters(self, limit: int = 100) -> Iterator[DeadLetter]:
        for raw_id in self._redis.zrevrange(_INDEX, 0, max(0, limit - 1)):
            job_id = raw_id.decode() if isinstance(raw_id, bytes) else str(raw_id)
            letter = self.get(job_id)
            if letter is not None:
                yield letter

    def get(self, job_id: str) -> DeadLetter | None:
        raw = self._redis.hgetall(f"gvw:dead_letter:{job_id}")
        if not raw:
            return None
        fields = {k.decode(): v.decode() for k, v in raw.items()}  # type: ignore[union-attr]
        return DeadLetter(
            job_id=job_id,
            code=fields.get("code", ""),
            message=fields.get("message", ""),
            attempts=int(fields.get("attempts", "0")),
            when=float(fields.get("when", "0")),
            job=json.loads(fields["job"]) if fields.get("job") else None,
        )

    def remove(self, job_id: str) -> None:
        pipe = self._redis.pipeline()
        pipe.zrem(_INDEX, job_id)
        pipe.delete(f"gvw:dead_letter:{job_id}")
        pipe.execute()


class LocalDeliveries:
    """In memory, for `gvw demo` and single processes without Redis."""

    def __init__(self) -> None:
        self._counts: dict[tuple[str, int], int] = {}
        self._letters: dict[str, DeadLetter] = {}

    def count(self, job_id: str, retries: int) -> int:
        key = (job_id, retries)
        self._counts[key] = self._counts.get(key, 0) + 1
        return self._counts[key]

    def clear(self, job_id: str, retries: int) -> None:
        self._counts.pop((job_id, retries), None)

    def forget(self, job_id: str) -> None:
        for key in [k for k in self._counts if k[0] == job_id]:
            del self._counts[key]

    def dead_letter(self, job_id: str, *, code: str, message: str, attempts: int, job: Any) -> None:
        self._letters[job_id] = DeadLetter(
            job_id, code, message, attempts, time.time(), job if isinstance(job, dict) else None
        )

    def dead_letters(self, limit: int = 100) -> Iterator[DeadLetter]:
        yield from sorted(self._letters.values(), key=lambda d: -d.when)[:limit]

    def get(self, job_id: str) -> DeadLetter | None:
        return self._letters.get(job_id)

    def remove(self, job_id: str) -> None:
        self._letters.pop(job_id, None)
