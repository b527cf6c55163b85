"""sha256 -> Gemini File API upload, shared by every worker of the fleet through Redis.

Keys are scoped by the API project (key fingerprint + endpoint): a file uploaded with one
key is invisible to another, so two projects sharing a Redis must not share entries.

    gvw:files:{project}:entry:{sha256}   JSON entry, TTL = expirationTime - safety margin
    gvw:files:{project}:lock:{sha256}    owner token of the worker uploading it right now
    gvw:files:{project}:events           hash of counters (uploads, hits, reuploads, ...)

Entries expire a margin before Gemini deletes the file (48 h after upload), so a cached URI
is never one Gemini has already deleted. Single flight: the first worker that needs an
image takes the lock and uploads; the others wait for the entry, and take the lock
themselves if its holder died (the lock's TTL outlives any upload).
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass
from typing import Protocol

import redis

from tasks.errors import ModelUnavailable
from worker.fleet.single_flight import SingleFlight
from worker.fleet.token_lock import LocalTokenLocks, RedisTokenLocks
from worker.observability import FILE_EVENTS


@dataclass(frozen=True)
class CachedFile:
    sha256: str
    name: str  # "files/abc123"
    uri: str
    mime_type: str
    size_bytes: int
    expires_at: float  # epoch seconds when Gemini deletes the file
    uploaded_at: float

    def to_json(self) -> str:
        return json.dumps(asdict(self), separators=(",", ":"))

    @classmethod
    def from_json(cls, raw: str | bytes) -> CachedFile:
        return cls(**json.loads(raw))


class FileCache(Protocol):
    def get(self, sha256: str) -> CachedFile | None: ...
    def put(self, entry: CachedFile) -> bool: ...
    # given `uri`, only while the entry is still that upload
    def evict(self, sha256: str, uri: str | None = None) -> None: ...
    def entries(self) -> Iterator[CachedFile]: ...
    def count(self, event: str, amount: int = 1) -> None: ...
    def counters(self) -> dict[str, int]: ...
    def get_or_upload(
        self,
        sha256: str,
        upload: Callable[[], CachedFile],
        *,
        on_wait: Callable[[], None] | None = None,
    ) -> tuple[CachedFile, bool]: ...


class _UploadFlight:
    """`get_or_upload` over the primitives of a concrete cache: one upload per image for
    the fleet, by the fleet's single flight (`worker.fleet.single_flight`)."""

    lock_ttl_s: float
    wait_s: float
    # one lock per image being uploaded, on the fleet's token lock (worker.fleet.token_lock)
    _flight: SingleFlight

    def get(self, sha256: str) -> CachedFile | None:
        raise NotImplementedError

    def put(self, entry: CachedFile) -> bool:
        raise NotImplementedError

    def count(self, event: str, amount: int = 1) -> None:
        raise NotImplementedError

    def _try_lock(self, sha256: str) -> str | None:
        return self._flight.lead(sha256, self.lock_ttl_s)

    def _event(self, event: str) -> None:
        self.count(event)
        FILE_EVENTS.labels(event).inc()

    def get_or_upload(
        self,
        sha256: str,
        upload: Callable[[], CachedFile],
        *,
        on_wait: Callable[[], None] | None = None,
    ) -> tuple[CachedFile, bool]:
        """The cached upload of `sha256`, uploading it if nobody has. Returns (entry, hit)."""

        def waiting() -> None:
            self._event("upload_waits")
            if on_wait is not None:
                on_wait()

        flight = self._flight.wait_or_lead(
            sha256,
            lambda: self.get(sha256),
            ttl_s=self.lock_ttl_s,
            wait_s=self.wait_s,
            on_wait=waiting,
            # wait_s already outlives a dead holder's lock: every pause is taken whole
            clip_pause_to_deadline=False,
        )
        if flight.found is not None:
            self._event("cache_hits")
            return flight.found, True
        if flight.lead_token is None:
            raise ModelUnavailable(
                f"upload of image {sha256[:12]} is still in progress on another worker "
                f"after {self.wait_s:.0f} s"
            )
        try:
            entry = upload()
            self.put(entry)
            self._event("uploads")
            return entry, False
        finally:
            self._flight.release(sha256, flight.lead_token)


class RedisFileCache(_UploadFlight):
    def __init__(
        self,
        client: redis.Redis,
        *,
        project: str,
        margin_s: float = 3600.0,
        lock_ttl_s: float = 120.0,
        wait_s: float | None = None,
    ) -> None:
        self._redis = client
        self._prefix = f"gvw:files:{project}:"
        self.margin_s = margin_s
        self.lock_ttl_s = lock_ttl_s
        # a waiter outlives a dead holder's lock by a little, then uploads itself
        self.wait_s = wait_s if wait_s is not None else lock_ttl_s + 5.0
        self._locks = RedisTokenLocks(client)
        self._flight = SingleFlight(self._locks, prefix=f"{self._prefix}lock:")

    def _entry_key(self, sha256: str) -> str:
        return f"{self._prefix}entry:{sha256}"

    def get(self, sha256: str) -> CachedFile | None:
        raw = self._redis.get(self._entry_key(sha256))
        return CachedFile.from_json(raw) if raw else None  # type: ignore[arg-type]

    def put(self, entry: CachedFile) -> bool:
        ttl_s = int(entry.expires_at - self.margin_s - time.time())
        if ttl_s <= 0:
            return False  # too close to Gemini's own deletion to be worth sharing
        self._redis.set(self._entry_key(entry.sha256), entry.to_json(), ex=ttl_s)
        return True

    def evict(self, sha256: str, uri: str | None = None) -> None:
        key = self._entry_key(sha256)
        if uri is None:
            self._redis.delete(key)
            return
        # Only the upload Gemini refused. Several jobs meet the same dead URI at once; the
        # first uploads again, and a later one evicting unconditionally would throw that
        # fresh upload away and upload again itself (one upload per job, not per fleet).
        raw = self._redis.get(key)
        if raw and CachedFile.from_json(raw).uri == uri:  # type: ignore[arg-type]
            self._locks.release(key, raw)  # compare-and-delete: still that entry

    def entries(self) -> Iterator[CachedFile]:
        for key in self._redis.scan_iter(match=f"{self._prefix}entry:*", count=500):
            raw = self._redis.get(key)
            if raw:
                yield CachedFile.from_json(raw)  # type: ignore[arg-type]

    def count(self, event: str, amount: int = 1) -> None:
        self._redis.hincrby(f"{self._prefix}events", event, amount)

    def counters(self) -> dict[str, int]:
        raw = self._redis.hgetall(f"{self._prefix}events")
        return {k.decode(): int(v) for k, v in raw.items()}  # type: ignore[union-attr]


class LocalFileCache(_UploadFlight):
    """In-process cache for `gvw demo` and single-process use, where there is no Redis."""

    def __init__(self, *, margin_s: float = 3600.0, lock_ttl_s: float = 120.0) -> None:
        self.margin_s = margin_s
        self.lock_ttl_s = lock_ttl_s
        self.wait_s = lock_ttl_s + 5.0
        self._entries: dict[str, CachedFile] = {}
        self._flight = SingleFlight(LocalTokenLocks())
        self._counters: dict[str, int] = {}
        self._mutex = threading.Lock()

    def get(self, sha256: str) -> CachedFile | None:
        with self._mutex:
            entry = self._entries.get(sha256)
            if entry is not None and entry.expires_at - self.margin_s <= time.time():
                del self._entries[sha256]
                return None
            return entry

    def put(self, entry: CachedFile) -> bool:
        if entry.expires_at - self.margin_s <= time.time():
            return False
        with self._mutex:
            self._entries[entry.sha256] = entry
        return True

    def evict(self, sha256: str, uri: str | None = None) -> None:
        with self._mutex:
            entry = self._entries.get(sha256)
            # given a refused URI, keep a fresh upload made since (see RedisFileCache.evict)
            if entry is not None and (uri is None or entry.uri == uri):
                del self._entries[sha256]

    def entries(self) -> Iterator[CachedFile]:
        with self._mutex:
            items = list(self._entries.values())
        yield from items

    def count(self, event: str, amount: int = 1) -> None:
        with self._mutex:
            self._counters[event] = self._counters.get(event, 0) + amount

    def counters(self) -> dict[str, int]:
        with self._mutex:
            return dict(self._counters)
