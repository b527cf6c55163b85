"""The dead-letter index: jobs that failed for good, in Redis.

Redis has no dead-letter queue: a rejected message is gone. Dead letters are the job's
error.json plus an entry here, which is what `gvw dead-letters list | replay` reads, and
what a producer's `wait` reads to end within seconds of a known failure.

The entry is written *before* error.json: a job that failed for good while storage is
down still leaves a trace, and its record waits here (``recorded`` = 0, ``record``) until
a later delivery writes it (`worker.fleet.job_claims` tells that delivery so). Every field is
bounded (`worker.contract.records`): the job is kept as a summary of at most 16 KB.

    gvw:dead_letters                    zset job_id -> when (epoch s)
    gvw:dead_letter:{job_id}            hash: code, message, attempts, when, job (JSON
                                        summary), fingerprint, recorded (0/1), and
                                        record (error.json's bytes) while recorded = 0
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from dataclasses import dataclass, replace
from typing import Any, Protocol

import redis

from worker.contract.records import summarize_job

_INDEX = "gvw:dead_letters"
_DEAD_LETTER_TTL_S = 30 * 24 * 3600
_MESSAGE_MAX_CHARS = 2000


def dead_letter_key(job_id: str) -> str:
    return f"gvw:dead_letter:{job_id}"


@dataclass(frozen=True)
class DeadLetter:
    job_id: str
    code: str
    message: str
    attempts: int
    when: float
    job: dict[str, Any] | None
    fingerprint: str = ""
    recorded: bool = True


class DeadLetters(Protocol):
    def dead_letter(
        self,
        job_id: str,
        *,
        code: str,
        message: str,
        attempts: int,
        job: Any,
        fingerprint: str = "",
        record: bytes = b"",
    ) -> None:
        """Index a job that failed for good, its record not yet written (``recorded`` 0)."""
        ...

    def mark_recorded(self, job_id: str) -> None:
        """The job's error.json is written: the index no longer holds the record."""
        ...

    def pending_record(self, job_id: str) -> bytes | None:
        """The error record still to be written, if any."""
        ...

    def dead_letters(self, limit: int = 100) -> Iterator[DeadLetter]: ...
    def get(self, job_id: str) -> DeadLetter | None: ...
    def remove(self, job_id: str) -> None: ...


class RedisDeadLetters:
    def __init__(self, client: redis.Redis) -> None:
        self._redis = client

    def dead_letter(
        self,
        job_id: str,
        *,
        code: str,
        message: str,
        attempts: int,
        job: Any,
        fingerprint: str = "",
        record: bytes = b"",
    ) -> None:
        now = time.time()
        fields: dict[str | bytes, str | bytes] = {
            "code": code,
            "message": message[:_MESSAGE_MAX_CHARS],
            "attempts": str(attempts),
            "when": str(now),
            "job": json.dumps(summarize_job(job), ensure_ascii=False) if job is not None else "",
            "fingerprint": fingerprint,
            "recorded": "0",
            "record": record,
        }
        key = dead_letter_key(job_id)
        pipe = self._redis.pipeline()
        pipe.hset(key, mapping=fields)
        pipe.expire(key, _DEAD_LETTER_TTL_S)
        pipe.zadd(_INDEX, {job_id: now})
        pipe.execute()

    def mark_recorded(self, job_id: str) -> None:
        key = dead_letter_key(job_id)
        pipe = self._redis.pipeline()
        pipe.hset(key, "recorded", "1")
        pipe.hdel(key, "record")
        pipe.execute()

    def pending_record(self, job_id: str) -> bytes | None:
        recorded, record = self._redis.hmget(dead_letter_key(job_id), ["recorded", "record"])
        if recorded != b"0" or not record:
            return None
        return bytes(record)  # type: ignore[arg-type]

    def dead_letters(self, limit: int = 100) -> Iterator[DeadLetter]:
        for raw_id in self._redis.zrevrange(_INDEX, 0, max(0, limit - 1)):
            job_id = raw_id.decode() if isinstance(raw_id, bytes) else str(raw_id)
            letter = self.get(job_id)
            if letter is not None:
                yield letter

    def get(self, job_id: str) -> DeadLetter | None:
        wanted = ["code", "message", "attempts", "when", "job", "fingerprint", "recorded"]
        values = self._redis.hmget(dead_letter_key(job_id), wanted)
        if all(v is None for v in values):
            return None
        fields = {k: v.decode() for k, v in zip(wanted, values, strict=True) if v is not None}  # type: ignore[union-attr]
        return DeadLetter(
            job_id=job_id,
            code=fields.get("code", ""),
            message=fields.get("message", ""),
            attempts=int(fields.get("attempts", "0")),
            when=float(fields.get("when", "0")),
            job=json.loads(fields["job"]) if fields.get("job") else None,
            fingerprint=fields.get("fingerprint", ""),
            recorded=fields.get("recorded", "1") != "0",
        )

    def remove(self, job_id: str) -> None:
        pipe = self._redis.pipeline()
        pipe.zrem(_INDEX, job_id)
        pipe.delete(dead_letter_key(job_id))
        pipe.execute()


class LocalDeadLetters:
    """In memory, for `gvw demo` and single processes without Redis."""

    def __init__(self) -> None:
        self._letters: dict[str, DeadLetter] = {}
        self._records: dict[str, bytes] = {}

    def dead_letter(
        self,
        job_id: str,
        *,
        code: str,
        message: str,
        attempts: int,
        job: Any,
        fingerprint: str = "",
        record: bytes = b"",
    ) -> None:
        summary = summarize_job(job)
        self._letters[job_id] = DeadLetter(
            job_id,
            code,
            message[:_MESSAGE_MAX_CHARS],
            attempts,
            time.time(),
            summary if isinstance(summary, dict) else None,
            fingerprint,
            recorded=False,
        )
        self._records[job_id] = record

    def mark_recorded(self, job_id: str) -> None:
        letter = self._letters.get(job_id)
        if letter is not None:
            self._letters[job_id] = replace(letter, recorded=True)
        self._records.pop(job_id, None)

    def pending_record(self, job_id: str) -> bytes | None:
        letter = self._letters.get(job_id)
        if letter is None or letter.recorded:
            return None
        return self._records.get(job_id) or None

    def dead_letters(self, limit: int = 100) -> Iterator[DeadLetter]:
        yield from sorted(self._letters.values(), key=lambda d: -d.when)[:limit]

    def get(self, job_id: str) -> DeadLetter | None:
        return self._letters.get(job_id)

    def remove(self, job_id: str) -> None:
        self._letters.pop(job_id, None)
        self._records.pop(job_id, None)
