"""Pure Redis logic of the fleet: rate limit window, cool-down, job lock heartbeat,
delivery counts and dead letters, paid answers (fakeredis with Lua)."""

from __future__ import annotations

import time

import fakeredis
import pytest

from tasks.errors import ModelRateLimited
from worker.fleet.answer_store import RedisAnswerStore
from worker.fleet.dead_letters import RedisDeadLetters
from worker.fleet.deliveries import RedisDeliveries
from worker.fleet.job_locks import RedisJobLocks
from worker.fleet.ratelimit import RedisRateLimiter
from worker.gemini import ModelAnswer, TokenUsage


def limiter(rpm: int, server: fakeredis.FakeServer | None = None) -> RedisRateLimiter:
    client = fakeredis.FakeRedis(server=server or fakeredis.FakeServer())
    return RedisRateLimiter(client, project="p", requests_per_minute=rpm)


def test_no_more_than_the_limit_in_a_minute_across_workers() -> None:
    server = fakeredis.FakeServer()
    workers = [limiter(10, server) for _ in range(4)]
    granted = sum(1 for i in range(40) if workers[i % 4].wait_ms() == 0)
    assert granted == 10
    wait_ms = workers[0].wait_ms()
    assert 60_000 <= wait_ms <= 61_000  # until the oldest leaves the window (60 s + margin)


def test_a_worker_waits_a_few_seconds_at_most_then_hands_the_job_back() -> None:
    one = limiter(1)
    one.acquire(max_wait_s=1)
    started = time.monotonic()
    with pytest.raises(ModelRateLimited) as info:
        one.acquire(max_wait_s=1)
    assert time.monotonic() - started < 0.5  # it did not sleep a minute to find out
    assert info.value.retry_after_s is not None and info.value.retry_after_s > 50
    assert info.value.details["local"] is True


def test_cool_down_stops_every_worker_even_without_a_limit() -> None:
    server = fakeredis.FakeServer()
    a, b = limiter(0, server), limiter(0, server)
    assert a.wait_ms() == 0
    a.cool_down(3.0)
    assert 2_500 <= b.wait_ms() <= 3_000
    a.cool_down(1.0)  # a shorter cool-down never shortens a longer one
    assert b.wait_ms() > 2_000


def test_job_lock_is_exclusive_and_renewed_while_held() -> None:
    client = fakeredis.FakeRedis()
    locks = RedisJobLocks(client, ttl_s=1.0)
    with locks.hold("job-1") as first:
        assert first
        with locks.hold("job-1") as second:
            assert not second
        time.sleep(1.6)  # past the TTL: only the heartbeat keeps it
        assert client.exists("gvw:lock:job:job-1")
    assert not client.exists("gvw:lock:job:job-1")


def test_deliveries_are_counted_per_attempt() -> None:
    deliveries = RedisDeliveries(fakeredis.FakeRedis())
    assert [deliveries.count("j", 0) for _ in range(3)] == [1, 2, 3]
    assert deliveries.count("j", 1) == 1  # a Celery retry is a new attempt
    deliveries.forget("j")
    assert deliveries.count("j", 0) == 1


def test_dead_letters_are_indexed_newest_first_and_removable() -> None:
    deliveries = RedisDeadLetters(fakeredis.FakeRedis())
    deliveries.dead_letter(
        "a", code="invalid_image", message="bad", attempts=1, job={"job_id": "a", "task": "caption"}
    )
    time.sleep(0.01)
    deliveries.dead_letter("b", code="internal", message="died", attempts=6, job=None)
    letters = list(deliveries.dead_letters())
    assert [d.job_id for d in letters] == ["b", "a"]
    assert letters[1].job == {"job_id": "a", "task": "caption"}
    assert letters[0].attempts == 6
    deliveries.remove("a")
    assert [d.job_id for d in deliveries.dead_letters()] == ["b"]


def test_paid_answer_round_trips_and_is_bounded() -> None:
    store = RedisAnswerStore(fakeredis.FakeRedis(), max_bytes=2_000)
    answer = ModelAnswer("a red circle", "STOP", TokenUsage(10, 5, 15, 0), "gemini-2.5-flash")
    assert store.put("j", "fp-1", answer, ["inline"])
    assert store.get("j", "fp-1") == (answer, ["inline"])
    huge = ModelAnswer("x" * 5_000, "STOP", TokenUsage(), None)
    assert not store.put("k", "fp-1", huge, ["inline"])
    assert store.get("k", "fp-1") is None


def test_a_paid_answer_is_only_handed_to_the_job_that_paid_for_it() -> None:
    store = RedisAnswerStore(fakeredis.FakeRedis())
    answer = ModelAnswer("a red circle", "STOP", TokenUsage(10, 5, 15, 0), "gemini-2.5-flash")
    store.put("j", "fp-first", answer, ["inline"])
    assert store.get("j", "fp-other") is None  # another job reusing the id
    assert store.get("j", "fp-first") == (answer, ["inline"])


def test_dead_letter_keeps_its_record_until_it_is_written() -> None:
    deliveries = RedisDeadLetters(fakeredis.FakeRedis())
    deliveries.dead_letter(
        "a",
        code="internal",
        message="s3 down",
        attempts=2,
        job={},
        fingerprint="f",
        record=b'{"status": "failed"}',
    )
    assert deliveries.pending_record("a") == b'{"status": "failed"}'
    letter = deliveries.get("a")
    assert letter is not None and not letter.recorded and letter.fingerprint == "f"
    deliveries.mark_recorded("a")
    assert deliveries.pending_record("a") is None
    letter = deliveries.get("a")
    assert letter is not None and letter.recorded


def test_a_huge_job_is_kept_as_a_bounded_summary() -> None:
    client = fakeredis.FakeRedis()
    deliveries = RedisDeadLetters(client)
    job = {
        "job_id": "a",
        "task": "caption",
        "images": ["s3://in/a.jpg"],
        "x" * 100: "y" * 5_000_000,
    }
    deliveries.dead_letter("a", code="invalid_job", message="m" * 100_000, attempts=1, job=job)
    assert len(client.hget("gvw:dead_letter:a", "job") or b"") <= 16 * 1024
    assert len(client.hget("gvw:dead_letter:a", "message") or b"") <= 2000
    letter = deliveries.get("a")
    assert letter is not None and letter.job is not None
    assert letter.job["truncated"] is True
    assert letter.job["images"] == ["s3://in/a.jpg"]
    assert letter.job["unknown_fields"] == ["x" * 64]


def test_claims_refuse_another_job_under_a_used_id() -> None:
    from worker.fleet.job_claims import RedisJobClaims

    client = fakeredis.FakeRedis()
    claims = RedisJobClaims(client, ttl_s=60)
    assert claims.claim("j", "fp-1", "s3://r/v/j").ours
    assert claims.claim("j", "fp-1", "s3://r/v/j").ours  # a redelivery
    other = claims.claim("j", "fp-2", "s3://r/thief/j")
    assert not other.ours and other.holder_folder == "s3://r/v/j"
    assert client.ttl("gvw:claim:j") > 0
    # a failure whose record waits in the dead-letter index is seen by the same job only
    RedisDeadLetters(client).dead_letter(
        "j", code="internal", message="m", attempts=1, job={}, fingerprint="fp-1", record=b"{}"
    )
    assert claims.claim("j", "fp-1", "s3://r/v/j").pending_record
