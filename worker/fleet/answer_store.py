"""A job's model answer, kept so that it is paid for once.

As soon as the model has answered, the answer is stored here, before it is read or
anything is published. A redelivery (the worker died before committing, or a bug failed
the attempt after the answer) or a concurrent duplicate finds it and publishes without
calling Gemini again; an answer that turns out unreadable is forgotten, so the retry
asks afresh. Entries carry the job's fingerprint (`Job.fingerprint`): only the very job
that paid for an answer gets it back, never another job that reuses its id. Bounded in size and time: answers
larger than `max_bytes` are not kept (they are re-asked), entries expire after `ttl_s`.
Correctness does not depend on it: result.json's conditional create does.
"""

from __future__ import annotations

import json
import threading
import time
from dataclasses import asdict
from typing import Protocol

import redis

from worker.gemini import ModelAnswer, TokenUsage

# the answer, and how each image was sent (inline / file_api) when it was bought
PaidAnswer = tuple[ModelAnswer, list[str]]


class AnswerStore(Protocol):
    def get(self, job_id: str, fingerprint: str) -> PaidAnswer | None: ...
    def put(
        self, job_id: str, fingerprint: str, answer: ModelAnswer, transports: list[str]
    ) -> bool: ...
    def forget(self, job_id: str) -> None: ...


def _encode(fingerprint: str, answer: ModelAnswer, transports: list[str]) -> bytes:
    return json.dumps(
        {"fingerprint": fingerprint, "answer": asdict(answer), "transports": transports}
    ).encode()


def _decode(raw: bytes, fingerprint: str) -> PaidAnswer | None:
    data = json.loads(raw)
    if data.get("fingerprint") != fingerprint:
        return None  # paid for by another job that used this id: not ours to publish
    fields = data["answer"]
    fields["usage"] = TokenUsage(**fields["usage"])
    return ModelAnswer(**fields), list(data["transports"])


class RedisAnswerStore:
    def __init__(
        self, client: redis.Redis, *, ttl_s: int = 24 * 3600, max_bytes: int = 4_000_000
    ) -> None:
        self._redis = client
        self._ttl_s = ttl_s
        self._max_bytes = max_bytes

    def get(self, job_id: str, fingerprint: str) -> PaidAnswer | None:
        raw = self._redis.get(f"gvw:answer:{job_id}")
        return _decode(raw, fingerprint) if raw else None  # type: ignore[arg-type]

    def put(
        self, job_id: str, fingerprint: str, answer: ModelAnswer, transports: list[str]
    ) -> bool:
        raw = _encode(fingerprint, answer, transports)
        if len(raw) > self._max_bytes:
            return False
        self._redis.set(f"gvw:answer:{job_id}", raw, ex=self._ttl_s)
        return True

    def forget(self, job_id: str) -> None:
        self._redis.delete(f"gvw:answer:{job_id}")


class LocalAnswerStore:
    def __init__(self, *, ttl_s: int = 24 * 3600, max_bytes: int = 4_000_000) -> None:
        self._ttl_s = ttl_s
        self._max_bytes = max_bytes
        self._answers: dict[str, tuple[float, bytes]] = {}
        self._mutex = threading.Lock()

    def get(self, job_id: str, fingerprint: str) -> PaidAnswer | None:
        with self._mutex:
            item = self._answers.get(job_id)
        if item is None or item[0] < time.monotonic():
            return None
        return _decode(item[1], fingerprint)

    def put(
        self, job_id: str, fingerprint: str, answer: ModelAnswer, transports: list[str]
    ) -> bool:
        encoded = _encode(fingerprint, answer, transports)
        if len(encoded) > self._max_bytes:
            return False
        with self._mutex:
            self._answers[job_id] = (time.monotonic() + self._ttl_s, encoded)
        return True

    def forget(self, job_id: str) -> None:
        with self._mutex:
            self._answers.pop(job_id, None)
