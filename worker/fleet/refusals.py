"""Jobs refused because their id belongs to a different job, kept where producers look.

A job sent under an id another job already holds is refused (`JobIdConflict`) and must
not touch that job's folder: its error record cannot go where its producer would look
for it. It is kept here instead, by job id and fingerprint, so that the producer's
`wait` / `status` (`worker.producers.client`), `gvw status ID` and `gvw dead-letters list` see the
refusal within seconds instead of the first job's answer or a silent timeout.

    gvw:refused:{job_id}    hash: fingerprint -> the refused job's error record (JSON,
                            bounded like every record); at most REFUSALS_PER_ID
                            fingerprints an id, expires after REFUSAL_TTL_S
    gvw:refusals            zset "{job_id}|{fingerprint}" -> when (epoch s), the newest
                            REFUSALS_MAX kept

Both bounds hold whatever producers send: a producer that reuses one id for a million
jobs costs REFUSALS_PER_ID entries, not a million.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, Protocol

REFUSALS_PER_ID = 20
REFUSALS_MAX = 10_000
REFUSAL_TTL_S = 30 * 24 * 3600
_INDEX = "gvw:refusals"

# KEYS: the id's hash, the index. ARGV: fingerprint, record, when, ttl, per id, max
_REFUSE_LUA = """
if redis.call('hexists', KEYS[1], ARGV[1]) == 0
        and redis.call('hlen', KEYS[1]) >= tonumber(ARGV[5]) then
    return 0
end
redis.call('hset', KEYS[1], ARGV[1], ARGV[2])
redis.call('expire', KEYS[1], ARGV[4])
redis.call('zadd', KEYS[2], ARGV[3], ARGV[6])
redis.call('zremrangebyrank', KEYS[2], 0, -tonumber(ARGV[7]) - 1)
return 1
"""


def refused_key(job_id: str) -> str:
    return f"gvw:refused:{job_id}"


@dataclass(frozen=True)
class Refusal:
    job_id: str
    fingerprint: str
    when: float
    record: bytes  # the refused job's error.json, as it would have been written


class Refusals(Protocol):
    def refuse(self, job_id: str, fingerprint: str, record: bytes) -> None:
        """Keep a refused job's record (bounded: see the module's docstring)."""
        ...

    def refused(self, job_id: str, fingerprint: str) -> bytes | None:
        """The record of the job with this fingerprint refused under this id, if any."""
        ...

    def of_job(self, job_id: str) -> list[Refusal]:
        """Every job refused under this id (newest first)."""
        ...

    def latest(self, limit: int = 100) -> Iterator[Refusal]:
        """The newest refusals of the fleet, newest first."""
        ...


class RedisRefusals:
    def __init__(self, client: Any) -> None:
        self._redis = client
        self._refuse = client.register_script(_REFUSE_LUA)

    def refuse(self, job_id: str, fingerprint: str, record: bytes) -> None:
        self._refuse(
            keys=[refused_key(job_id), _INDEX],
            args=[
                fingerprint,
                record,
                time.time(),
                REFUSAL_TTL_S,
                REFUSALS_PER_ID,
                f"{job_id}|{fingerprint}",
                REFUSALS_MAX,
            ],
        )

    def refused(self, job_id: str, fingerprint: str) -> bytes | None:
        found = self._redis.hget(refused_key(job_id), fingerprint)
        return bytes(found) if found else None

    def of_job(self, job_id: str) -> list[Refusal]:
        kept = self._redis.hgetall(refused_key(job_id))
        if not kept:
            return []
        members = [f"{job_id}|{_text(fp)}" for fp in kept]
        pipe = self._redis.pipeline(transaction=False)
        for member in members:
            pipe.zscore(_INDEX, member)
        whens = pipe.execute()
        found = [
            Refusal(job_id, _text(fp), float(when or 0), bytes(record))
            for (fp, record), when in zip(kept.items(), whens, strict=True)
        ]
        return sorted(found, key=lambda r: -r.when)

    def latest(self, limit: int = 100) -> Iterator[Refusal]:
        for member, when in self._redis.zrevrange(_INDEX, 0, max(0, limit - 1), withscores=True):
            job_id, _, fingerprint = _text(member).rpartition("|")
            record = self._redis.hget(refused_key(job_id), fingerprint)
            if record:
                yield Refusal(job_id, fingerprint, float(when), bytes(record))


class LocalRefusals:
    """In memory, for `gvw demo` and single processes without Redis: the same bounds."""

    def __init__(self) -> None:
        self._kept: dict[str, dict[str, Refusal]] = {}
        self._index: dict[tuple[str, str], float] = {}  # the fleet's list: (id, fp) -> when
        self._mutex = threading.Lock()

    def refuse(self, job_id: str, fingerprint: str, record: bytes) -> None:
        with self._mutex:
            of_id = self._kept.setdefault(job_id, {})
            if fingerprint not in of_id and len(of_id) >= REFUSALS_PER_ID:
                return
            when = time.time()
            of_id[fingerprint] = Refusal(job_id, fingerprint, when, record)
            self._index[(job_id, fingerprint)] = when
            if len(self._index) > REFUSALS_MAX:
                newest = sorted(self._index.items(), key=lambda item: -item[1])[:REFUSALS_MAX]
                self._index = dict(newest)

    def refused(self, job_id: str, fingerprint: str) -> bytes | None:
        found = self._kept.get(job_id, {}).get(fingerprint)
        return found.record if found else None

    def of_job(self, job_id: str) -> list[Refusal]:
        return sorted(self._kept.get(job_id, {}).values(), key=lambda r: -r.when)

    def latest(self, limit: int = 100) -> Iterator[Refusal]:
        with self._mutex:
            newest = sorted(self._index, key=lambda member: -self._index[member])[:limit]
            found = [self._kept.get(job_id, {}).get(fp) for job_id, fp in newest]
        yield from (refusal for refusal in found if refusal is not None)


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)
