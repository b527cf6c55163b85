"""The fleet-wide File API cache: entries, expiry margin, single-flight uploads."""

from __future__ import annotations

import dataclasses
import threading
import time
from collections.abc import Callable

import fakeredis
import pytest

from tasks.errors import ModelUnavailable
from worker.fleet.file_cache import CachedFile, FileCache, LocalFileCache, RedisFileCache

HOUR_S = 3600.0


def entry(sha: str = "ab" * 32, *, expires_in_s: float = 48 * HOUR_S) -> CachedFile:
    now = time.time()
    return CachedFile(
        sha256=sha,
        name="files/x1",
        uri="http://g/v1beta/files/x1",
        mime_type="image/png",
        size_bytes=10,
        expires_at=now + expires_in_s,
        uploaded_at=now,
    )


def redis_cache(**kwargs: float) -> RedisFileCache:
    return RedisFileCache(fakeredis.FakeRedis(), project="p1", **kwargs)


CACHES: list[Callable[..., FileCache]] = [redis_cache, LocalFileCache]


@pytest.fixture(params=CACHES, ids=["redis", "local"])
def make_cache(request: pytest.FixtureRequest) -> Callable[..., FileCache]:
    return request.param  # type: ignore[no-any-return]


def test_put_then_get(make_cache: Callable[..., FileCache]) -> None:
    cache = make_cache()
    stored = entry()
    assert cache.put(stored) is True
    assert cache.get(stored.sha256) == stored
    assert cache.get("cd" * 32) is None


def test_an_entry_too_close_to_deletion_is_not_cached(make_cache: Callable[..., FileCache]) -> None:
    cache = make_cache(margin_s=HOUR_S)
    assert cache.put(entry(expires_in_s=HOUR_S - 5)) is False
    assert cache.get("ab" * 32) is None


def test_redis_entry_expires_a_margin_before_gemini_deletes_the_file() -> None:
    cache = redis_cache(margin_s=HOUR_S)
    cache.put(entry(expires_in_s=2 * HOUR_S))
    ttl_s = cache._redis.ttl(cache._entry_key("ab" * 32))
    assert HOUR_S - 5 <= ttl_s <= HOUR_S


def test_entries_are_scoped_by_project() -> None:
    server = fakeredis.FakeServer()
    one = RedisFileCache(fakeredis.FakeRedis(server=server), project="key-a")
    two = RedisFileCache(fakeredis.FakeRedis(server=server), project="key-b")
    one.put(entry())
    assert one.get("ab" * 32) is not None
    assert two.get("ab" * 32) is None  # a file uploaded with one key is invisible to another


def test_evict(make_cache: Callable[..., FileCache]) -> None:
    cache = make_cache()
    cache.put(entry())
    cache.evict("ab" * 32)
    assert cache.get("ab" * 32) is None


def test_evict_of_a_refused_uri_keeps_a_fresh_upload(make_cache: Callable[..., FileCache]) -> None:
    # two jobs met the same dead URI; the first uploaded again before the second evicts
    cache = make_cache()
    stale = entry()
    fresh = dataclasses.replace(stale, name="files/fresh", uri=stale.uri + "-fresh")
    cache.put(fresh)
    cache.evict("ab" * 32, uri=stale.uri)
    assert cache.get("ab" * 32) == fresh
    cache.evict("ab" * 32, uri=fresh.uri)
    assert cache.get("ab" * 32) is None


def test_single_flight_uploads_once_for_many_threads(make_cache: Callable[..., FileCache]) -> None:
    cache = make_cache()
    uploads: list[int] = []

    def upload() -> CachedFile:
        uploads.append(1)
        time.sleep(0.3)  # long enough that every thread arrives while it runs
        return entry()

    results: list[tuple[CachedFile, bool]] = []
    threads = [
        threading.Thread(target=lambda: results.append(cache.get_or_upload("ab" * 32, upload)))
        for _ in range(12)
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=10)
    assert len(uploads) == 1
    assert len(results) == 12
    assert sorted(hit for _, hit in results) == [False] + [True] * 11
    assert cache.counters()["uploads"] == 1


def test_a_dead_holder_blocks_no_longer_than_the_lock_ttl() -> None:
    cache = redis_cache(lock_ttl_s=0.5)
    assert cache._try_lock("ab" * 32) is not None  # a worker took it and died
    started = time.monotonic()
    got, hit = cache.get_or_upload("ab" * 32, entry)
    waited_s = time.monotonic() - started
    assert not hit
    assert got.sha256 == "ab" * 32
    assert 0.4 <= waited_s < 3.0


def test_waiting_is_bounded() -> None:
    cache = redis_cache(lock_ttl_s=30, wait_s=0.3)
    cache._try_lock("ab" * 32)
    with pytest.raises(ModelUnavailable, match="still in progress"):
        cache.get_or_upload("ab" * 32, entry)


def test_a_failed_upload_releases_the_lock(make_cache: Callable[..., FileCache]) -> None:
    cache = make_cache()

    def broken() -> CachedFile:
        raise ModelUnavailable("503")

    with pytest.raises(ModelUnavailable):
        cache.get_or_upload("ab" * 32, broken)
    _got, hit = cache.get_or_upload("ab" * 32, entry)  # not blocked by a leftover lock
    assert not hit
