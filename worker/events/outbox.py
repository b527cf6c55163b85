"""The outbox: every (event, destination) delivery, kept until it is delivered or has
used its attempts; in Redis (GVW_REDIS_URL), with an in-memory twin for runs without it.

A delivery's id is its event's id and a hash of its destination: adding the same event
for the same destination twice keeps one (a redelivered job emits its event again).
Delivery is at least once: a run *claims* due deliveries, which counts an attempt and
leases each for `lease_s` (its due time moves to the lease's end), sends them, and settles
each with the lease's token: delivered, due again after a backoff, or failed for good. A
worker killed mid-delivery settles nothing, and the delivery is due again when its lease
ends; a run whose lease ran out cannot settle a delivery another run took over.

    gvw:events:d:{delivery_id}  hash: event_id, type, destination, body, attempts, state
                                (pending | delivered | failed), error, created, updated,
                                next_at, lease (the token of the run holding it)
    gvw:events:due              zset delivery_id -> when it is due (epoch s); a lease's end
    gvw:events:failed           zset delivery_id -> when it failed for good
    gvw:events:index            zset delivery_id -> when it was added (the newest kept)
    gvw:events:tick             when the next delivery run is scheduled (epoch s)
    gvw:events:lock             one delivery run at a time (the fleet's token lock)

Bounds: `PENDING_MAX` deliveries waiting (past it an event is refused, loudly), the
newest `INDEX_MAX` listed, `FAILED_MAX` failed ones; a delivered delivery is kept
`DELIVERED_KEEP_S` (its id is remembered, for dedup, that long), a failed one
`FAILED_KEEP_S`; an error message `ERROR_MAX_CHARS`.
"""

from __future__ import annotations

import hashlib
import threading
import time
from collections.abc import Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass, replace
from typing import Any, Final, Literal, Protocol

from worker.events.records import Event
from worker.fleet.token_lock import LocalTokenLocks, RedisTokenLocks, held

PENDING_MAX: Final = 100_000
INDEX_MAX: Final = 100_000
FAILED_MAX: Final = 100_000
DELIVERED_KEEP_S: Final = 7 * 24 * 3600
FAILED_KEEP_S: Final = 30 * 24 * 3600
ERROR_MAX_CHARS: Final = 500
# one delivery run at a time; the lock is renewed while the run lasts
RUN_LOCK_TTL_S: Final = 30.0
# a scheduled run this close to the time wanted will do; a schedule whose run never came
# (its message lost) is forgotten this long after its time
RUN_SLACK_S: Final = 1.0
RUN_GRACE_S: Final = 60.0

State = Literal["pending", "delivered", "failed"]
_PREFIX = "gvw:events:"
_HASH = f"{_PREFIX}d:"
_DUE = f"{_PREFIX}due"
_FAILED = f"{_PREFIX}failed"
_INDEX = f"{_PREFIX}index"
_TICK = f"{_PREFIX}tick"
_LOCK = f"{_PREFIX}lock"


def delivery_id(event_id: str, destination: str) -> str:
    return f"{event_id}.{hashlib.sha256(destination.encode()).hexdigest()[:16]}"


@dataclass(frozen=True)
class Delivery:
    delivery_id: str
    event_id: str
    type: str
    destination: str
    body: str
    attempts: int
    state: State
    error: str
    created: float
    updated: float
    next_at: float | None
    lease: str = ""  # the token of the run that claimed it (settling needs it)


class Outbox(Protocol):
    def add(self, event: Event, destination: str, *, now: float) -> bool | None:
        """Keep a delivery of ``event`` to ``destination``, due at once: True; False when
        it is kept already (the same event emitted again); None when the outbox is full
        (`PENDING_MAX` waiting)."""
        ...

    def claim(self, *, now: float, limit: int, lease_s: float, token: str) -> list[Delivery]:
        """Up to ``limit`` due deliveries, each counted one more attempt and leased to
        ``token`` until ``now + lease_s``."""
        ...

    def delivered(self, delivery_id: str, token: str, *, now: float) -> bool:
        """Settle a claimed delivery as delivered (False: the lease was lost)."""
        ...

    def retry_at(self, delivery_id: str, token: str, *, error: str, at: float, now: float) -> bool:
        """Settle a failed attempt: due again at ``at``."""
        ...

    def failed(self, delivery_id: str, token: str, *, error: str, now: float) -> bool:
        """Settle a delivery as failed for good: kept and listed until redelivered."""
        ...

    def get(self, delivery_id: str) -> Delivery | None: ...

    def listing(self, *, limit: int, failed_only: bool = False) -> list[Delivery]:
        """The newest deliveries (or failed ones), newest first."""
        ...

    def of_event(self, event_id: str) -> list[Delivery]:
        """An event's deliveries still kept."""
        ...

    def redeliver(self, delivery_ids: Sequence[str], *, now: float) -> int:
        """Deliveries (failed, or delivered and kept) due again at once, with their
        attempts back to none. Returns how many."""
        ...

    def failed_ids(self, *, limit: int) -> list[str]: ...

    def pending_count(self) -> int: ...

    def next_due(self) -> float | None:
        """When the earliest waiting delivery is due (a lease's end for a claimed one)."""
        ...

    def request_run(self, *, at: float, now: float) -> bool:
        """Mark a delivery run as scheduled for ``at`` unless one is scheduled by then
        (or running): True when the caller must send it."""
        ...

    def finish_run(self, *, now: float) -> float | None:
        """At a run's end: when the next run must be, scheduled here, if the caller must
        send it (None: nothing is waiting, or a run is scheduled in time already)."""
        ...

    def run_lock(self) -> AbstractContextManager[str | None]:
        """One delivery run at a time: yields a token, or None when another run holds it."""
        ...


def _fields(event: Event, destination: str, now: float) -> dict[str, str]:
    return {
        "event_id": event.id,
        "type": event.type,
        "destination": destination,
        "body": event.body(),
        "attempts": "0",
        "state": "pending",
        "error": "",
        "created": repr(now),
        "updated": repr(now),
        "next_at": repr(now),
        "lease": "",
    }


def _delivery(delivery_id: str, raw: dict[Any, Any]) -> Delivery | None:
    fields = {
        (k.decode() if isinstance(k, bytes) else str(k)): (
            v.decode() if isinstance(v, bytes) else str(v)
        )
        for k, v in raw.items()
    }
    if not fields.get("event_id"):
        return None
    state = fields.get("state", "pending")
    next_at = fields.get("next_at", "")
    return Delivery(
        delivery_id=delivery_id,
        event_id=fields["event_id"],
        type=fields.get("type", ""),
        destination=fields.get("destination", ""),
        body=fields.get("body", ""),
        attempts=int(fields.get("attempts") or 0),
        state=state if state in ("pending", "delivered", "failed") else "pending",  # type: ignore[arg-type]
        error=fields.get("error", ""),
        created=float(fields.get("created") or 0),
        updated=float(fields.get("updated") or 0),
        next_at=float(next_at) if next_at and state == "pending" else None,
        lease=fields.get("lease", ""),
    )


# --- Redis --------------------------------------------------------------------------------

_ADD_LUA = """
-- KEYS: hash, due, index; ARGV: id, now, pending_max, index_max, then field/value pairs
if redis.call('exists', KEYS[1]) == 1 then return 0 end
if redis.call('zcard', KEYS[2]) >= tonumber(ARGV[3]) then return -1 end
local fields = {}
for i = 5, #ARGV do fields[#fields + 1] = ARGV[i] end
redis.call('hset', KEYS[1], (table.unpack or unpack)(fields))
redis.call('zadd', KEYS[2], ARGV[2], ARGV[1])
redis.call('zadd', KEYS[3], ARGV[2], ARGV[1])
local over = redis.call('zcard', KEYS[3]) - tonumber(ARGV[4])
if over > 0 then redis.call('zremrangebyrank', KEYS[3], 0, over - 1) end
return 1
"""

_CLAIM_LUA = """
-- KEYS: due; ARGV: now, limit, lease_until, token, hash prefix
local ids = redis.call('zrangebyscore', KEYS[1], '-inf', ARGV[1], 'LIMIT', 0, tonumber(ARGV[2]))
local claimed = {}
for _, id in ipairs(ids) do
    local key = ARGV[5] .. id
    if redis.call('exists', key) == 0 then
        redis.call('zrem', KEYS[1], id)
    else
        redis.call('zadd', KEYS[1], ARGV[3], id)
        redis.call('hincrby', key, 'attempts', 1)
        redis.call('hset', key, 'lease', ARGV[4], 'next_at', ARGV[3])
        claimed[#claimed + 1] = id
    end
end
return claimed
"""

_SETTLE_LUA = """
-- KEYS: hash, due, failed; ARGV: id, token, outcome, now, error, at, keep_s, failed_max
if redis.call('hget', KEYS[1], 'lease') ~= ARGV[2] then return 0 end
redis.call('hset', KEYS[1], 'lease', '', 'updated', ARGV[4], 'error', ARGV[5])
if ARGV[3] == 'delivered' then
    redis.call('hset', KEYS[1], 'state', 'delivered', 'next_at', '')
    redis.call('zrem', KEYS[2], ARGV[1])
    redis.call('expire', KEYS[1], tonumber(ARGV[7]))
elseif ARGV[3] == 'retry' then
    redis.call('hset', KEYS[1], 'state', 'pending', 'next_at', ARGV[6])
    redis.call('zadd', KEYS[2], ARGV[6], ARGV[1])
else
    redis.call('hset', KEYS[1], 'state', 'failed', 'next_at', '')
    redis.call('zrem', KEYS[2], ARGV[1])
    redis.call('zadd', KEYS[3], ARGV[4], ARGV[1])
    redis.call('expire', KEYS[1], tonumber(ARGV[7]))
    local over = redis.call('zcard', KEYS[3]) - tonumber(ARGV[8])
    if over > 0 then redis.call('zremrangebyrank', KEYS[3], 0, over - 1) end
end
return 1
"""

_REDELIVER_LUA = """
-- KEYS: hash, due, failed; ARGV: id, now
if redis.call('exists', KEYS[1]) == 0 then return 0 end
redis.call('hset', KEYS[1], 'state', 'pending', 'attempts', '0', 'error', '', 'lease', '',
    'next_at', ARGV[2], 'updated', ARGV[2])
redis.call('persist', KEYS[1])
redis.call('zrem', KEYS[3], ARGV[1])
redis.call('zadd', KEYS[2], ARGV[2], ARGV[1])
return 1
"""

_REQUEST_RUN_LUA = """
-- KEYS: tick; ARGV: at, now, slack_s, grace_s
local at = tonumber(ARGV[1])
local current = redis.call('get', KEYS[1])
if current and tonumber(current) <= at + tonumber(ARGV[3]) then return 0 end
local ttl_ms = math.floor((math.max(at - tonumber(ARGV[2]), 0) + tonumber(ARGV[4])) * 1000)
redis.call('set', KEYS[1], ARGV[1], 'PX', ttl_ms)
return 1
"""

_FINISH_RUN_LUA = """
-- KEYS: tick, due; ARGV: now, slack_s, grace_s. Returns the next run's time to send, or ''
local now = tonumber(ARGV[1])
local first = redis.call('zrange', KEYS[2], 0, 0, 'WITHSCORES')
if #first == 0 then
    redis.call('del', KEYS[1])
    return ''
end
local at = math.max(tonumber(first[2]), now)
local current = redis.call('get', KEYS[1])
-- a run scheduled in the future, in time, will do (one that is past has started: us)
if current and tonumber(current) > now and tonumber(current) <= at + tonumber(ARGV[2]) then
    return ''
end
local ttl_ms = math.floor((at - now + tonumber(ARGV[3])) * 1000)
redis.call('set', KEYS[1], tostring(at), 'PX', ttl_ms)
return tostring(at)
"""


class RedisOutbox:
    def __init__(self, client: Any) -> None:
        self._redis = client
        self._locks = RedisTokenLocks(client)
        self._add = client.register_script(_ADD_LUA)
        self._claim = client.register_script(_CLAIM_LUA)
        self._settle = client.register_script(_SETTLE_LUA)
        self._redeliver = client.register_script(_REDELIVER_LUA)
        self._request_run = client.register_script(_REQUEST_RUN_LUA)
        self._finish_run = client.register_script(_FINISH_RUN_LUA)

    def add(self, event: Event, destination: str, *, now: float) -> bool | None:
        ident = delivery_id(event.id, destination)
        pairs = [item for pair in _fields(event, destination, now).items() for item in pair]
        added = int(
            self._add(
                keys=[_HASH + ident, _DUE, _INDEX],
                args=[ident, repr(now), PENDING_MAX, INDEX_MAX, *pairs],
            )
        )
        return None if added < 0 else bool(added)

    def claim(self, *, now: float, limit: int, lease_s: float, token: str) -> list[Delivery]:
        ids = self._claim(
            keys=[_DUE], args=[repr(now), max(1, limit), repr(now + lease_s), token, _HASH]
        )
        return self._read([i.decode() if isinstance(i, bytes) else str(i) for i in ids])

    def _settle_one(
        self, ident: str, token: str, outcome: str, *, now: float, error: str = "", at: float = 0
    ) -> bool:
        keep_s = DELIVERED_KEEP_S if outcome == "delivered" else FAILED_KEEP_S
        return bool(
            self._settle(
                keys=[_HASH + ident, _DUE, _FAILED],
                args=[
                    ident,
                    token,
                    outcome,
                    repr(now),
                    error[:ERROR_MAX_CHARS],
                    repr(at),
                    keep_s,
                    FAILED_MAX,
                ],
            )
        )

    def delivered(self, delivery_id: str, token: str, *, now: float) -> bool:
        return self._settle_one(delivery_id, token, "delivered", now=now)

    def retry_at(self, delivery_id: str, token: str, *, error: str, at: float, now: float) -> bool:
        return self._settle_one(delivery_id, token, "retry", now=now, error=error, at=at)

    def failed(self, delivery_id: str, token: str, *, error: str, now: float) -> bool:
        return self._settle_one(delivery_id, token, "failed", now=now, error=error)

    def get(self, delivery_id: str) -> Delivery | None:
        return _delivery(delivery_id, self._redis.hgetall(_HASH + delivery_id))

    def _read(self, ids: Sequence[str]) -> list[Delivery]:
        if not ids:
            return []
        pipe = self._redis.pipeline(transaction=False)
        for ident in ids:
            pipe.hgetall(_HASH + ident)
        found = [_delivery(i, raw) for i, raw in zip(ids, pipe.execute(), strict=True)]
        return [d for d in found if d is not None]

    def listing(self, *, limit: int, failed_only: bool = False) -> list[Delivery]:
        ids = self._redis.zrevrange(_FAILED if failed_only else _INDEX, 0, max(0, limit - 1))
        return self._read([i.decode() if isinstance(i, bytes) else str(i) for i in ids])

    def of_event(self, event_id: str) -> list[Delivery]:
        ids: set[str] = set()
        for key in (_INDEX, _FAILED, _DUE):
            for member, _score in self._redis.zscan_iter(key, match=f"{event_id}.*"):
                ids.add(member.decode() if isinstance(member, bytes) else str(member))
        return self._read(sorted(ids))

    def redeliver(self, delivery_ids: Sequence[str], *, now: float) -> int:
        return sum(
            int(self._redeliver(keys=[_HASH + i, _DUE, _FAILED], args=[i, repr(now)]))
            for i in delivery_ids
        )

    def failed_ids(self, *, limit: int) -> list[str]:
        ids = self._redis.zrevrange(_FAILED, 0, max(0, limit - 1))
        return [i.decode() if isinstance(i, bytes) else str(i) for i in ids]

    def pending_count(self) -> int:
        return int(self._redis.zcard(_DUE))

    def next_due(self) -> float | None:
        first = self._redis.zrange(_DUE, 0, 0, withscores=True)
        return float(first[0][1]) if first else None

    def request_run(self, *, at: float, now: float) -> bool:
        return bool(
            self._request_run(keys=[_TICK], args=[repr(at), repr(now), RUN_SLACK_S, RUN_GRACE_S])
        )

    def finish_run(self, *, now: float) -> float | None:
        at = self._finish_run(keys=[_TICK, _DUE], args=[repr(now), RUN_SLACK_S, RUN_GRACE_S])
        text = at.decode() if isinstance(at, bytes) else str(at or "")
        return float(text) if text else None

    def run_lock(self) -> AbstractContextManager[str | None]:
        return held(self._locks, _LOCK, RUN_LOCK_TTL_S)


# --- in memory ----------------------------------------------------------------------------


class LocalOutbox:
    """`Outbox` in this process's memory (`gvw demo`, single processes without Redis): one
    lock stands in for Redis's atomic scripts; kept deliveries expire as in Redis."""

    def __init__(self) -> None:
        self._guard = threading.Lock()
        self._deliveries: dict[str, Delivery] = {}
        self._due: dict[str, float] = {}
        self._failed: dict[str, float] = {}
        self._expires: dict[str, float] = {}
        self._tick: tuple[float, float] | None = None  # (at, forgotten after)
        self._locks = LocalTokenLocks()

    def _live(self, ident: str, now: float) -> Delivery | None:
        expires = self._expires.get(ident)
        if expires is not None and expires <= now:
            self._deliveries.pop(ident, None)
            self._expires.pop(ident, None)
            self._due.pop(ident, None)
            self._failed.pop(ident, None)
        return self._deliveries.get(ident)

    def add(self, event: Event, destination: str, *, now: float) -> bool | None:
        ident = delivery_id(event.id, destination)
        with self._guard:
            if self._live(ident, time.time()) is not None:
                return False
            if len(self._due) >= PENDING_MAX:
                return None
            fields = _fields(event, destination, now)
            delivery = _delivery(ident, fields)
            assert delivery is not None
            self._deliveries[ident] = delivery
            self._due[ident] = now
            if len(self._deliveries) > INDEX_MAX:
                oldest = min(self._deliveries.values(), key=lambda d: d.created)
                if oldest.state != "pending":
                    self._drop(oldest.delivery_id)
            return True

    def _drop(self, ident: str) -> None:
        for table in (self._deliveries, self._due, self._failed, self._expires):
            table.pop(ident, None)  # type: ignore[attr-defined]

    def claim(self, *, now: float, limit: int, lease_s: float, token: str) -> list[Delivery]:
        with self._guard:
            due = sorted((at, i) for i, at in self._due.items() if at <= now)[: max(1, limit)]
            claimed = []
            for _, ident in due:
                current = self._live(ident, now)
                if current is None:
                    self._due.pop(ident, None)
                    continue
                current = replace(
                    current, attempts=current.attempts + 1, lease=token, next_at=now + lease_s
                )
                self._deliveries[ident] = current
                self._due[ident] = now + lease_s
                claimed.append(current)
            return claimed

    def _settle(
        self, ident: str, token: str, outcome: str, *, now: float, error: str = "", at: float = 0
    ) -> bool:
        with self._guard:
            current = self._live(ident, now)
            if current is None or current.lease != token:
                return False
            settled = replace(current, lease="", updated=now, error=error[:ERROR_MAX_CHARS])
            if outcome == "retry":
                self._deliveries[ident] = replace(settled, state="pending", next_at=at)
                self._due[ident] = at
                return True
            self._due.pop(ident, None)
            if outcome == "delivered":
                self._deliveries[ident] = replace(settled, state="delivered", next_at=None)
                self._expires[ident] = now + DELIVERED_KEEP_S
                return True
            self._deliveries[ident] = replace(settled, state="failed", next_at=None)
            self._failed[ident] = now
            self._expires[ident] = now + FAILED_KEEP_S
            while len(self._failed) > FAILED_MAX:
                self._failed.pop(min(self._failed, key=self._failed.__getitem__))
            return True

    def delivered(self, delivery_id: str, token: str, *, now: float) -> bool:
        return self._settle(delivery_id, token, "delivered", now=now)

    def retry_at(self, delivery_id: str, token: str, *, error: str, at: float, now: float) -> bool:
        return self._settle(delivery_id, token, "retry", now=now, error=error, at=at)

    def failed(self, delivery_id: str, token: str, *, error: str, now: float) -> bool:
        return self._settle(delivery_id, token, "failed", now=now, error=error)

    def get(self, delivery_id: str) -> Delivery | None:
        with self._guard:
            return self._live(delivery_id, time.time())

    def listing(self, *, limit: int, failed_only: bool = False) -> list[Delivery]:
        with self._guard:
            now = time.time()
            if failed_only:
                ids = sorted(self._failed, key=lambda i: -self._failed[i])
            else:
                ids = sorted(self._deliveries, key=lambda i: -self._deliveries[i].created)
            found = [self._live(i, now) for i in ids[: max(0, limit)]]
            return [d for d in found if d is not None]

    def of_event(self, event_id: str) -> list[Delivery]:
        with self._guard:
            now = time.time()
            found = [self._live(i, now) for i in sorted(self._deliveries) if i.startswith(event_id)]
            return [d for d in found if d is not None and d.event_id == event_id]

    def redeliver(self, delivery_ids: Sequence[str], *, now: float) -> int:
        count = 0
        with self._guard:
            for ident in delivery_ids:
                current = self._live(ident, now)
                if current is None:
                    continue
                self._deliveries[ident] = replace(
                    current, state="pending", attempts=0, error="", lease="", next_at=now
                )
                self._expires.pop(ident, None)
                self._failed.pop(ident, None)
                self._due[ident] = now
                count += 1
        return count

    def failed_ids(self, *, limit: int) -> list[str]:
        with self._guard:
            return sorted(self._failed, key=lambda i: -self._failed[i])[: max(0, limit)]

    def pending_count(self) -> int:
        with self._guard:
            return len(self._due)

    def next_due(self) -> float | None:
        with self._guard:
            return min(self._due.values()) if self._due else None

    def request_run(self, *, at: float, now: float) -> bool:
        with self._guard:
            if self._tick is not None and self._tick[1] > now and self._tick[0] <= at + RUN_SLACK_S:
                return False
            self._tick = (at, max(at, now) + RUN_GRACE_S)
            return True

    def finish_run(self, *, now: float) -> float | None:
        with self._guard:
            if not self._due:
                self._tick = None
                return None
            at = max(min(self._due.values()), now)
            if (
                self._tick is not None
                and self._tick[1] > now
                and now < self._tick[0] <= at + RUN_SLACK_S
            ):
                return None
            self._tick = (at, at + RUN_GRACE_S)
            return at

    def run_lock(self) -> AbstractContextManager[str | None]:
        return held(self._locks, _LOCK, RUN_LOCK_TTL_S)
