"""The fleet's one lock (worker.fleet.token_lock): the Redis adapter (fakeredis with its Lua)
and the in-memory twin pass the same contract."""

from __future__ import annotations

import time

import fakeredis
import pytest

from worker.fleet.token_lock import LocalTokenLocks, RedisTokenLocks, TokenLocks, held


@pytest.fixture(params=["redis", "local"])
def locks(request: pytest.FixtureRequest) -> TokenLocks:
    if request.param == "redis":
        return RedisTokenLocks(fakeredis.FakeRedis())
    return LocalTokenLocks()


def test_one_holder_at_a_time(locks: TokenLocks) -> None:
    token = locks.acquire("k", 5.0)
    assert token is not None
    assert locks.acquire("k", 5.0) is None
    assert locks.acquire("other", 5.0) is not None
    locks.release("k", token)
    assert locks.acquire("k", 5.0) is not None


def test_a_given_token_is_the_one_held(locks: TokenLocks) -> None:
    assert locks.acquire("k", 5.0, token="mine") == "mine"
    assert not locks.renew("k", "theirs", 5.0)
    assert locks.renew("k", "mine", 5.0)


def test_a_holder_whose_lock_expired_cannot_free_or_extend_the_next_holders(
    locks: TokenLocks,
) -> None:
    first = locks.acquire("k", 0.05)
    assert first is not None
    time.sleep(0.1)  # past the TTL: the first holder is presumed dead
    second = locks.acquire("k", 5.0)
    assert second is not None
    locks.release("k", first)  # a late release of the first run: compare-and-delete
    assert not locks.renew("k", first, 5.0)
    assert locks.acquire("k", 5.0) is None  # still the second's


def test_held_renews_while_the_holder_runs_and_frees_at_the_end(locks: TokenLocks) -> None:
    with held(locks, "k", 0.3) as token:
        assert token is not None
        time.sleep(0.8)  # more than twice the TTL: renewed by the heartbeat
        assert locks.acquire("k", 0.3) is None
    assert locks.acquire("k", 5.0) is not None


def test_held_yields_none_when_another_holds_it(locks: TokenLocks) -> None:
    assert locks.acquire("k", 5.0) is not None
    with held(locks, "k", 5.0) as token:
        assert token is None


def test_a_dead_holders_lock_frees_within_its_ttl(locks: TokenLocks) -> None:
    # a holder that stops renewing (its process died): nothing releases the lock
    assert locks.acquire("k", 0.2) is not None
    time.sleep(0.3)  # its TTL passing: a duration, not a condition
    assert locks.acquire("k", 5.0) is not None
