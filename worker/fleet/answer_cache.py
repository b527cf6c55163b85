"""An answer is paid once: the same request, from any job on any worker, reuses it.

Keyed by content, never by job id: the bytes of every image as sent, the task's request
(prompt, system instruction, schema), the model and the generation options
(`answer_key`). A job whose request is identical to one already answered within
``GVW_ANSWER_CACHE_TTL_S`` (0: off) publishes that answer without a model call, and its
result.json says whose answer it reused; ``options.fresh`` asks the model anyway (and
stores the new answer). Only answers that were read successfully are kept, so an
unreadable one is never handed on. Scoped by API project (key and endpoint), like the
File API cache.

    gvw:answer-cache:{project}:{key}   {"answer": ..., "job_id": ..., "answered_at": ...}
"""

from __future__ import annotations

import hashlib
import json
import logging
import threading
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any, Protocol

import redis

from tasks.base import ModelRequest
from worker.contract.records import now_iso
from worker.fleet.single_flight import SingleFlight
from worker.fleet.token_lock import LocalTokenLocks, RedisTokenLocks
from worker.gemini.records import GenerationOptions, ModelAnswer, TokenUsage

# an answer is a few KB; one above this is not worth a Redis value (it is asked again)
log = logging.getLogger(__name__)

_MAX_BYTES = 4_000_000
# bump when what the key covers changes: old entries then simply stop matching
_KEY_VERSION = 1


@dataclass(frozen=True)
class CachedAnswer:
    answer: ModelAnswer
    job_id: str  # the job that paid for it
    answered_at: str


def answer_key(
    *,
    model: str,
    request: ModelRequest,
    options: GenerationOptions,
    images: Sequence[tuple[str, str]],
) -> str:
    """The content key of a request: ``images`` are (sha256 of the bytes sent, MIME type),
    in the request's order."""
    material = {
        "v": _KEY_VERSION,
        "model": model.removeprefix("models/"),
        "images": [list(image) for image in images],
        "prompt": request.prompt,
        "system_instruction": request.system_instruction,
        "response_json_schema": request.response_json_schema,
        "spatial": request.spatial,
        "options": asdict(options),
    }
    text = json.dumps(material, sort_keys=True, separators=(",", ":"), default=repr)
    return hashlib.sha256(text.encode()).hexdigest()


class AnswerCache(Protocol):
    @property
    def enabled(self) -> bool: ...
    def lookup(self, key: str, *, wait_s: float) -> Lookup: ...
    def put(self, key: str, answer: ModelAnswer, *, job_id: str, replace: bool = False) -> None: ...
    def release(self, key: str, token: str) -> None: ...
    def forget(self, key: str) -> None: ...


@dataclass(frozen=True)
class Lookup:
    """What `lookup` found: the answer, or the lead (this job asks, and must `release`
    the token once it has stored the answer or failed), or neither (the leader took
    longer than the wait: this job asks too)."""

    found: CachedAnswer | None = None
    lead_token: str | None = None


def _encode(answer: ModelAnswer, job_id: str) -> bytes:
    return json.dumps(
        {"answer": asdict(answer), "job_id": job_id, "answered_at": now_iso()}
    ).encode()


def _decode(raw: bytes) -> CachedAnswer | None:
    try:
        data: dict[str, Any] = json.loads(raw)
        fields = data["answer"]
        fields["usage"] = TokenUsage(**fields["usage"])
        return CachedAnswer(ModelAnswer(**fields), str(data["job_id"]), str(data["answered_at"]))
    except (ValueError, KeyError, TypeError):
        # written by another version of the worker: a miss, asked again and replaced
        log.warning("unreadable answer cache entry ignored")
        return None


class NoAnswerCache:
    """``GVW_ANSWER_CACHE_TTL_S=0``: every job asks the model."""

    enabled = False

    def lookup(self, key: str, *, wait_s: float) -> Lookup:
        return Lookup()

    def put(self, key: str, answer: ModelAnswer, *, job_id: str, replace: bool = False) -> None:
        return None

    def release(self, key: str, token: str) -> None:
        return None

    def forget(self, key: str) -> None:
        return None


class _AnswerFlight:
    """`lookup` and `release` over a store's `_get`. Identical requests arriving together
    (a burst of duplicates, the common case of a backfill) would all miss and all pay: the
    first takes the lead and asks, the others wait for its answer (the fleet's single
    flight, `worker.fleet.single_flight`). A leader that dies leaves its lead to expire
    (``lead_ttl_s``, past the task's hard time limit); one that fails releases it, and a
    waiter takes over."""

    enabled = True
    lead_ttl_s: float
    # the lead of one request's key, on the fleet's token lock (worker.fleet.token_lock)
    _flight: SingleFlight

    def _get(self, key: str) -> CachedAnswer | None:
        raise NotImplementedError

    def lookup(self, key: str, *, wait_s: float) -> Lookup:
        flight = self._flight.wait_or_lead(
            key, lambda: self._get(key), ttl_s=self.lead_ttl_s, wait_s=wait_s
        )
        if flight.found is None and flight.lead_token is None:
            log.warning("an identical request is still being asked elsewhere: asking too")
        return Lookup(found=flight.found, lead_token=flight.lead_token)

    def release(self, key: str, token: str) -> None:
        self._flight.release(key, token)


class RedisAnswerCache(_AnswerFlight):
    def __init__(self, client: redis.Redis, *, project: str, ttl_s: int, lead_ttl_s: float) -> None:
        self._redis = client
        self._prefix = f"gvw:answer-cache:{project}:"
        self._ttl_s = ttl_s
        self.lead_ttl_s = lead_ttl_s
        self._flight = SingleFlight(
            RedisTokenLocks(client), prefix=f"gvw:answer-cache-lead:{project}:"
        )

    def _get(self, key: str) -> CachedAnswer | None:
        raw = self._redis.get(self._prefix + key)
        return _decode(raw) if raw else None  # type: ignore[arg-type]

    def put(self, key: str, answer: ModelAnswer, *, job_id: str, replace: bool = False) -> None:
        raw = _encode(answer, job_id)
        if len(raw) <= _MAX_BYTES:
            # the first answer stands (a racing duplicate does not replace it), unless
            # the job asked for a fresh one
            self._redis.set(self._prefix + key, raw, ex=self._ttl_s, nx=not replace)

    def forget(self, key: str) -> None:
        self._redis.delete(self._prefix + key)


class LocalAnswerCache(_AnswerFlight):
    """In memory, for `gvw demo` and single processes without Redis."""

    def __init__(self, *, ttl_s: int, lead_ttl_s: float) -> None:
        self._ttl_s = ttl_s
        self.lead_ttl_s = lead_ttl_s
        self._entries: dict[str, tuple[float, bytes]] = {}
        self._flight = SingleFlight(LocalTokenLocks())
        self._mutex = threading.Lock()

    def _get(self, key: str) -> CachedAnswer | None:
        with self._mutex:
            entry = self._entries.get(key)
        if entry is None or entry[0] < time.monotonic():
            return None
        return _decode(entry[1])

    def put(self, key: str, answer: ModelAnswer, *, job_id: str, replace: bool = False) -> None:
        now = time.monotonic()
        with self._mutex:
            if replace or key not in self._entries or self._entries[key][0] < now:
                self._entries[key] = (now + self._ttl_s, _encode(answer, job_id))

    def forget(self, key: str) -> None:
        with self._mutex:
            self._entries.pop(key, None)
