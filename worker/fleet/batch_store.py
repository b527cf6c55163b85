"""Batch mode's state, in Redis: jobs waiting for a batch, and the batches the fleet runs.

A job in batch mode (`options.mode: "batch"`) is prepared by a worker as usual; instead of
calling Gemini, the worker keeps its request here and the job waits. The follower
(`worker.batch.follower`, run by the self-rescheduling `vision.batch_tick` task) groups the
waiting requests into Gemini batch jobs, follows them, and hands each answer back to its
job. Every step is recorded before it is taken, so a follower, worker or Redis restart
(with `appendonly yes`) resumes instead of losing a job or paying twice:

    gvw:batch:pending:{model}   list of job ids waiting for a batch (oldest first)
    gvw:batch:job:{job_id}      hash: job (JSON), request (the SDK's InlinedRequest as
                                JSON), model, fingerprint, queued_at, tries, batch
    gvw:batch:open              set of the fleet's batches not yet finished
    gvw:batch:{batch_id}        hash: model, display_name, job_ids (JSON), state
                                (assembled | submitted | delivered | returned), name
                                (Gemini's, once known), created_at, submitted_at,
                                ended_at, gemini_state, stats (JSON), source (inline |
                                file)
    gvw:batch:timings:{job_id}  the preparing run's stage timings (JSON)
    gvw:batch:images:{job_id}   the job's images as its request described them (JSON)
    gvw:batch:tick              a follower run is scheduled (expires)
    gvw:batch:lock              the follower running now (one at a time)

Jobs move from a pending list into a batch record in one Lua script: a crash leaves each
job id in exactly one of them. Every key expires (`ttl_s`, days): nothing grows forever.
"""

from __future__ import annotations

import json
import threading
import time
import uuid
from collections.abc import Iterator, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass, field, replace
from typing import Any, Protocol

import redis

from worker.fleet.token_lock import LocalTokenLocks, RedisTokenLocks, held

_PREFIX = "gvw:batch:"
# the follower's lock lives this long without renewal: a run killed mid-way holds batch
# mode up for no longer (a live run renews it every third of it)
FOLLOWER_LOCK_TTL_S = 15.0

# KEYS[1] = pending list, KEYS[2] = the new batch's hash, KEYS[3] = the open set
# ARGV[1] = how many, ARGV[2] = batch id, ARGV[3] = model, ARGV[4] = display name,
# ARGV[5] = now, ARGV[6] = ttl s, ARGV[7] = job key prefix
# Returns the job ids taken (none: nothing was written).
_TAKE_LUA = """
local listed = redis.call('LRANGE', KEYS[1], 0, tonumber(ARGV[1]) - 1)
if #listed == 0 then
    return listed
end
redis.call('LTRIM', KEYS[1], #listed, -1)
-- once each, and only jobs still waiting (a requeue repeated by a run that died, or a
-- job forgotten since, must not be asked, and paid for, twice)
local ids, seen = {}, {}
for _, id in ipairs(listed) do
    if not seen[id] and redis.call('HEXISTS', ARGV[7] .. id, 'request') == 1 then
        seen[id] = true
        ids[#ids + 1] = id
    end
end
if #ids == 0 then
    return ids
end
redis.call('HSET', KEYS[2], 'model', ARGV[3], 'display_name', ARGV[4],
    'job_ids', cjson.encode(ids), 'state', 'assembled', 'created_at', ARGV[5])
redis.call('EXPIRE', KEYS[2], tonumber(ARGV[6]))
redis.call('SADD', KEYS[3], ARGV[2])
for _, id in ipairs(ids) do
    redis.call('HSET', ARGV[7] .. id, 'batch', ARGV[2])
    redis.call('EXPIRE', ARGV[7] .. id, tonumber(ARGV[6]))
end
return ids
"""


class Batches(Protocol):
    """Batch mode's state, as the pipeline (parking a request) and the follower (assembling,
    following, delivering) see it: `BatchStore` in Redis, `LocalBatchStore` in one process."""

    def add_job(
        self,
        job_id: str,
        *,
        job: dict[str, Any],
        request: dict[str, Any],
        model: str,
        fingerprint: str,
        transports: list[str],
        estimate_usd: float,
        timings_ms: dict[str, float] | None = None,
        images: list[dict[str, Any]] | None = None,
        attempt: int = 1,
    ) -> bool: ...
    def job(self, job_id: str) -> WaitingJob | None: ...
    def timings_ms(self, job_id: str) -> dict[str, float]: ...
    def images(self, job_id: str) -> list[dict[str, Any]] | None: ...
    def is_waiting(self, job_id: str) -> bool: ...
    def waiting_in(self, job_id: str) -> str | None: ...
    def forget_job(self, job_id: str) -> None: ...
    def requeue(self, job_id: str, model: str) -> None: ...
    def count_try(self, job_id: str) -> int: ...
    def pending_models(self) -> list[str]: ...
    def pending_count(self, model: str) -> int: ...
    def first_pending(self, model: str) -> str | None: ...
    def oldest_pending_at(self, model: str) -> float | None: ...
    def take(self, model: str, count: int) -> BatchRecord | None: ...
    def batch(self, batch_id: str) -> BatchRecord | None: ...
    def update(self, batch_id: str, **values: Any) -> None: ...
    def drop_open(self, batch_id: str) -> None: ...
    def close(self, batch_id: str, state: str) -> None: ...
    def open_batches(self) -> list[str]: ...
    def all_batches(self) -> Iterator[BatchRecord]: ...
    def claim_tick(self, within_s: float) -> bool: ...
    def release_tick(self) -> None: ...
    def follower_lock(self) -> AbstractContextManager[str | None]: ...
    def has_work(self) -> bool: ...


@dataclass(frozen=True)
class WaitingJob:
    job_id: str
    job: dict[str, Any]
    request: dict[str, Any]  # the SDK's InlinedRequest, as JSON
    model: str
    fingerprint: str
    tries: int
    queued_at: float
    transports: list[str]
    estimate_usd: float
    # the run that prepared it (1 = the job's first): a job sent to the queue again
    # carries its count on, so the retry policy bounds a job that keeps failing
    attempt: int = 1


@dataclass
class BatchRecord:
    batch_id: str
    model: str
    display_name: str
    job_ids: list[str]
    state: str
    created_at: float
    name: str = ""
    gemini_state: str = ""
    submitted_at: float | None = None
    ended_at: float | None = None
    source: str = ""
    stats: dict[str, Any] = field(default_factory=dict)
    submit_started_at: float | None = None
    # the day's budget reserved for it (worker.fleet.budget), settled when it is delivered
    budget_day: int | None = None
    budget_micro: int = 0


class BatchStore:
    def __init__(self, client: redis.Redis, *, ttl_s: int = 3 * 24 * 3600) -> None:
        self._redis = client
        self._ttl_s = ttl_s
        self._take = client.register_script(_TAKE_LUA)
        self._locks = RedisTokenLocks(client)

    # --- jobs waiting ----------------------------------------------------------------

    def add_job(
        self,
        job_id: str,
        *,
        job: dict[str, Any],
        request: dict[str, Any],
        model: str,
        fingerprint: str,
        transports: list[str],
        estimate_usd: float,
        timings_ms: dict[str, float] | None = None,
        images: list[dict[str, Any]] | None = None,
        attempt: int = 1,
    ) -> bool:
        """Keep a prepared job's request until a batch takes it. False when the job is
        already waiting or in a batch (a redelivery): nothing is added twice."""
        key = f"{_PREFIX}job:{job_id}"
        if not self._redis.hsetnx(key, "model", model) and self._redis.hexists(key, "request"):
            return False  # (a hash without a request is an add that died half-way: redo)
        pipe = self._redis.pipeline()
        pipe.hset(
            key,
            mapping={
                "job": json.dumps(job),
                "request": json.dumps(request),
                "fingerprint": fingerprint,
                "queued_at": f"{time.time():.3f}",
                "transports": json.dumps(transports),
                "estimate_usd": f"{estimate_usd:.8f}",
                "attempt": attempt,
            },
        )
        pipe.hsetnx(key, "tries", 0)
        pipe.expire(key, self._ttl_s)
        if timings_ms:
            # the worker's time on the run that prepared it, for its result's timings
            pipe.set(f"{_PREFIX}timings:{job_id}", json.dumps(timings_ms), ex=self._ttl_s)
        if images:
            # the images as the request described them, for its result's `images`: the
            # run that publishes the answer need not fetch them again
            pipe.set(f"{_PREFIX}images:{job_id}", json.dumps(images), ex=self._ttl_s)
        pipe.rpush(f"{_PREFIX}pending:{model}", job_id)
        pipe.expire(f"{_PREFIX}pending:{model}", self._ttl_s)
        pipe.execute()
        return True

    def job(self, job_id: str) -> WaitingJob | None:
        raw = self._redis.hgetall(f"{_PREFIX}job:{job_id}")
        if not raw or b"request" not in raw:  # type: ignore[operator]
            return None
        data = {k.decode(): v.decode() for k, v in raw.items()}  # type: ignore[union-attr]
        return WaitingJob(
            job_id=job_id,
            job=json.loads(data["job"]),
            request=json.loads(data["request"]),
            model=data["model"],
            fingerprint=data.get("fingerprint", ""),
            tries=int(data.get("tries", 0)),
            queued_at=float(data.get("queued_at", 0)),
            transports=list(json.loads(data.get("transports") or "[]")),
            estimate_usd=float(data.get("estimate_usd") or 0),
            attempt=int(data.get("attempt") or 1),
        )

    def timings_ms(self, job_id: str) -> dict[str, float]:
        raw = self._redis.get(f"{_PREFIX}timings:{job_id}")
        return dict(json.loads(raw)) if raw else {}  # type: ignore[arg-type]

    def images(self, job_id: str) -> list[dict[str, Any]] | None:
        raw = self._redis.get(f"{_PREFIX}images:{job_id}")
        return list(json.loads(raw)) if raw else None  # type: ignore[arg-type]

    def is_waiting(self, job_id: str) -> bool:
        return bool(self._redis.hexists(f"{_PREFIX}job:{job_id}", "request"))

    def waiting_in(self, job_id: str) -> str | None:
        """Where a job in batch mode waits: its batch's id, "" while it waits for one to
        be assembled, None when it is not waiting (never batched, or answered)."""
        raw = self._redis.hmget(f"{_PREFIX}job:{job_id}", ["request", "batch"])
        request, batch = raw  # type: ignore[misc]
        if request is None:
            return None
        return batch.decode() if batch else ""

    def forget_job(self, job_id: str) -> None:
        self._redis.delete(f"{_PREFIX}job:{job_id}")

    def requeue(self, job_id: str, model: str) -> None:
        """Back to the end of the waiting list, its request kept (a failed try, or a
        batch that ended without answers)."""
        pipe = self._redis.pipeline()
        pipe.hdel(f"{_PREFIX}job:{job_id}", "batch")
        pipe.hset(f"{_PREFIX}job:{job_id}", "queued_at", f"{time.time():.3f}")
        pipe.expire(f"{_PREFIX}job:{job_id}", self._ttl_s)
        pipe.rpush(f"{_PREFIX}pending:{model}", job_id)
        pipe.expire(f"{_PREFIX}pending:{model}", self._ttl_s)
        pipe.execute()

    def count_try(self, job_id: str) -> int:
        """One more failed try of the job inside a batch; the total."""
        return int(self._redis.hincrby(f"{_PREFIX}job:{job_id}", "tries", 1))

    def pending_models(self) -> list[str]:
        prefix = f"{_PREFIX}pending:"
        return sorted(
            key.decode().removeprefix(prefix)  # type: ignore[union-attr]
            for key in self._redis.scan_iter(match=f"{prefix}*", count=100)
        )

    def pending_count(self, model: str) -> int:
        return int(self._redis.llen(f"{_PREFIX}pending:{model}"))  # type: ignore[arg-type]

    def first_pending(self, model: str) -> str | None:
        first = self._redis.lindex(f"{_PREFIX}pending:{model}", 0)
        return first.decode() if first is not None else None  # type: ignore[union-attr]

    def oldest_pending_at(self, model: str) -> float | None:
        first = self.first_pending(model)
        if first is None:
            return None
        queued = self._redis.hget(f"{_PREFIX}job:{first}", "queued_at")
        return float(queued) if queued else 0.0  # type: ignore[arg-type]

    # --- batches ------------------------------------------------------------------------

    def take(self, model: str, count: int) -> BatchRecord | None:
        """Move up to `count` waiting jobs of `model` into a new batch record, atomically."""
        batch_id = uuid.uuid4().hex[:16]
        display_name = f"gvw-{batch_id}"
        ids = self._take(
            keys=[f"{_PREFIX}pending:{model}", f"{_PREFIX}{batch_id}", f"{_PREFIX}open"],
            args=[
                count,
                batch_id,
                model,
                display_name,
                f"{time.time():.3f}",
                self._ttl_s,
                f"{_PREFIX}job:",
            ],
        )
        if not ids:
            return None
        return self.batch(batch_id)

    def batch(self, batch_id: str) -> BatchRecord | None:
        raw = self._redis.hgetall(f"{_PREFIX}{batch_id}")
        if not raw:
            return None
        data = {k.decode(): v.decode() for k, v in raw.items()}  # type: ignore[union-attr]
        return BatchRecord(
            batch_id=batch_id,
            model=data["model"],
            display_name=data["display_name"],
            job_ids=list(json.loads(data["job_ids"])),
            state=data["state"],
            created_at=float(data["created_at"]),
            name=data.get("name", ""),
            gemini_state=data.get("gemini_state", ""),
            submitted_at=float(data["submitted_at"]) if data.get("submitted_at") else None,
            ended_at=float(data["ended_at"]) if data.get("ended_at") else None,
            source=data.get("source", ""),
            stats=json.loads(data.get("stats") or "{}"),
            submit_started_at=(
                float(data["submit_started_at"]) if data.get("submit_started_at") else None
            ),
            budget_day=int(data["budget_day"]) if data.get("budget_day") else None,
            budget_micro=int(data.get("budget_micro") or 0),
        )

    def update(self, batch_id: str, **values: Any) -> None:
        encoded: dict[str | bytes, bytes | float | int | str] = {
            key: json.dumps(value) if isinstance(value, dict | list) else str(value)
            for key, value in values.items()
        }
        pipe = self._redis.pipeline()
        pipe.hset(f"{_PREFIX}{batch_id}", mapping=encoded)
        pipe.expire(f"{_PREFIX}{batch_id}", self._ttl_s)  # kept while it is followed
        pipe.execute()

    def drop_open(self, batch_id: str) -> None:
        """A batch whose record is gone (expired) is followed no more."""
        self._redis.srem(f"{_PREFIX}open", batch_id)

    def close(self, batch_id: str, state: str) -> None:
        """The batch is done with: its jobs are delivered or sent back."""
        self.update(batch_id, state=state, ended_at=f"{time.time():.3f}")
        self._redis.srem(f"{_PREFIX}open", batch_id)

    def open_batches(self) -> list[str]:
        return sorted(m.decode() for m in self._redis.smembers(f"{_PREFIX}open"))  # type: ignore[union-attr]

    def all_batches(self) -> Iterator[BatchRecord]:
        """Every batch record still kept (open or finished within the TTL), newest first."""
        records = []
        for key in self._redis.scan_iter(match=f"{_PREFIX}*", count=200):
            batch_id = key.decode().removeprefix(_PREFIX)  # type: ignore[union-attr]
            if ":" in batch_id or batch_id in ("open", "tick", "lock"):
                continue
            record = self.batch(batch_id)
            if record is not None:
                records.append(record)
        yield from sorted(records, key=lambda r: r.created_at, reverse=True)

    # --- the follower's schedule and lock ---------------------------------------------

    def claim_tick(self, within_s: float) -> bool:
        """True when no follower run is scheduled yet: the caller schedules one."""
        return bool(self._redis.set(f"{_PREFIX}tick", "1", nx=True, px=int(within_s * 1000)))

    def release_tick(self) -> None:
        self._redis.delete(f"{_PREFIX}tick")

    def follower_lock(self) -> AbstractContextManager[str | None]:
        """One follower run at a time: the fleet's token lock, short-lived and renewed
        while the run lasts (a killed run frees it within FOLLOWER_LOCK_TTL_S)."""
        return held(self._locks, f"{_PREFIX}lock", FOLLOWER_LOCK_TTL_S)

    def has_work(self) -> bool:
        return bool(self.open_batches()) or any(
            self.pending_count(m) for m in self.pending_models()
        )


def chunked(items: Sequence[str], size: int) -> Iterator[Sequence[str]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


class LocalBatchStore:
    """`BatchStore` in this process's memory, for the local adapters (`gvw demo`, the fast
    pipeline tests): one process holds the whole fleet, so a lock stands in for Redis's
    atomic steps. Nothing expires: a local run is short."""

    def __init__(self) -> None:
        self._guard = threading.Lock()
        self._jobs: dict[str, dict[str, Any]] = {}
        self._pending: dict[str, list[str]] = {}
        self._batches: dict[str, BatchRecord] = {}
        self._open: set[str] = set()
        self._timings: dict[str, dict[str, float]] = {}
        self._images: dict[str, list[dict[str, Any]]] = {}
        self._tick_until = 0.0
        self._locks = LocalTokenLocks()

    def add_job(
        self,
        job_id: str,
        *,
        job: dict[str, Any],
        request: dict[str, Any],
        model: str,
        fingerprint: str,
        transports: list[str],
        estimate_usd: float,
        timings_ms: dict[str, float] | None = None,
        images: list[dict[str, Any]] | None = None,
        attempt: int = 1,
    ) -> bool:
        with self._guard:
            if job_id in self._jobs:
                return False
            self._jobs[job_id] = {
                "waiting": WaitingJob(
                    job_id=job_id,
                    job=json.loads(json.dumps(job)),
                    request=json.loads(json.dumps(request)),
                    model=model,
                    fingerprint=fingerprint,
                    tries=0,
                    queued_at=time.time(),
                    transports=list(transports),
                    estimate_usd=estimate_usd,
                    attempt=attempt,
                ),
                "batch": None,
            }
            if timings_ms:
                self._timings[job_id] = dict(timings_ms)
            if images:
                self._images[job_id] = list(images)
            self._pending.setdefault(model, []).append(job_id)
            return True

    def job(self, job_id: str) -> WaitingJob | None:
        with self._guard:
            entry = self._jobs.get(job_id)
            return entry["waiting"] if entry is not None else None  # type: ignore[no-any-return]

    def timings_ms(self, job_id: str) -> dict[str, float]:
        return dict(self._timings.get(job_id, {}))

    def images(self, job_id: str) -> list[dict[str, Any]] | None:
        return self._images.get(job_id)

    def is_waiting(self, job_id: str) -> bool:
        return job_id in self._jobs

    def waiting_in(self, job_id: str) -> str | None:
        with self._guard:
            entry = self._jobs.get(job_id)
            return None if entry is None else (entry["batch"] or "")

    def forget_job(self, job_id: str) -> None:
        with self._guard:
            self._jobs.pop(job_id, None)

    def requeue(self, job_id: str, model: str) -> None:
        with self._guard:
            entry = self._jobs.get(job_id)
            if entry is None:
                return
            entry["batch"] = None
            entry["waiting"] = replace(entry["waiting"], queued_at=time.time())
            self._pending.setdefault(model, []).append(job_id)

    def count_try(self, job_id: str) -> int:
        with self._guard:
            entry = self._jobs[job_id]
            entry["waiting"] = replace(entry["waiting"], tries=entry["waiting"].tries + 1)
            return int(entry["waiting"].tries)

    def pending_models(self) -> list[str]:
        with self._guard:
            return sorted(model for model, ids in self._pending.items() if ids)

    def pending_count(self, model: str) -> int:
        return len(self._pending.get(model, []))

    def first_pending(self, model: str) -> str | None:
        with self._guard:
            ids = self._pending.get(model) or []
            return ids[0] if ids else None

    def oldest_pending_at(self, model: str) -> float | None:
        first = self.first_pending(model)
        if first is None:
            return None
        with self._guard:
            entry = self._jobs.get(first)
            return float(entry["waiting"].queued_at) if entry is not None else 0.0

    def take(self, model: str, count: int) -> BatchRecord | None:
        with self._guard:
            listed = self._pending.get(model, [])[:count]
            del self._pending.get(model, [])[: len(listed)]
            ids = [i for i in dict.fromkeys(listed) if i in self._jobs]
            if not ids:
                return None
            batch_id = uuid.uuid4().hex[:16]
            self._batches[batch_id] = BatchRecord(
                batch_id=batch_id,
                model=model,
                display_name=f"gvw-{batch_id}",
                job_ids=list(ids),
                state="assembled",
                created_at=time.time(),
            )
            self._open.add(batch_id)
            for job_id in ids:
                if job_id in self._jobs:
                    self._jobs[job_id]["batch"] = batch_id
        return self.batch(batch_id)

    def batch(self, batch_id: str) -> BatchRecord | None:
        with self._guard:
            record = self._batches.get(batch_id)
            # a copy, as Redis would hand back: the caller's changes go through `update`
            return replace(record, job_ids=list(record.job_ids)) if record else None

    def update(self, batch_id: str, **values: Any) -> None:
        with self._guard:
            record = self._batches[batch_id]
            for key, value in values.items():
                setattr(record, key, _typed(key, value))

    def drop_open(self, batch_id: str) -> None:
        with self._guard:
            self._open.discard(batch_id)

    def close(self, batch_id: str, state: str) -> None:
        self.update(batch_id, state=state, ended_at=time.time())
        with self._guard:
            self._open.discard(batch_id)

    def open_batches(self) -> list[str]:
        with self._guard:
            return sorted(self._open)

    def all_batches(self) -> Iterator[BatchRecord]:
        with self._guard:
            records = sorted(self._batches.values(), key=lambda r: r.created_at, reverse=True)
        yield from (replace(r) for r in records)

    def claim_tick(self, within_s: float) -> bool:
        with self._guard:
            now = time.monotonic()
            if now < self._tick_until:
                return False
            self._tick_until = now + within_s
            return True

    def release_tick(self) -> None:
        self._tick_until = 0.0

    def follower_lock(self) -> AbstractContextManager[str | None]:
        return held(self._locks, "follower", FOLLOWER_LOCK_TTL_S)

    def has_work(self) -> bool:
        return bool(self.open_batches()) or any(
            self.pending_count(m) for m in self.pending_models()
        )


def _typed(key: str, value: Any) -> Any:
    """A value given to `update` as the Redis store would read it back."""
    field_type = BatchRecord.__dataclass_fields__[key].type
    if value is None or isinstance(value, dict | list):
        return value
    if value == "" and "None" in str(field_type):
        return None
    if "float" in str(field_type):
        return float(value)
    if "int" in str(field_type):
        return int(value)
    return str(value)
