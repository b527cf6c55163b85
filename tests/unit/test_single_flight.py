"""The fleet's single flight (worker.fleet.single_flight): one caller does the work, the
others wait for its result, and take over from a leader that died. On the Redis token
lock (fakeredis with its Lua) and the in-memory one, by the same tests."""

from __future__ import annotations

import threading
import time

import fakeredis
import pytest

from worker.fleet.single_flight import MAX_PAUSE_S, Flight, SingleFlight
from worker.fleet.token_lock import LocalTokenLocks, RedisTokenLocks


@pytest.fixture(params=["redis", "local"])
def flight(request: pytest.FixtureRequest) -> SingleFlight:
    if request.param == "redis":
        return SingleFlight(RedisTokenLocks(fakeredis.FakeRedis()), prefix="lead:")
    return SingleFlight(LocalTokenLocks())


class Results:
    """Where the leader stores its result, and how many times anyone looked."""

    def __init__(self) -> None:
        self.value: str | None = None
        self.looks = 0

    def get(self) -> str | None:
        self.looks += 1
        return self.value


def test_a_result_already_there_is_taken_without_a_lead(flight: SingleFlight) -> None:
    results = Results()
    results.value = "done"
    assert flight.wait_or_lead("k", results.get, ttl_s=30, wait_s=0) == Flight(found="done")
    assert flight.lead("k", 30) is not None  # nobody took the lead


def test_the_first_caller_leads_and_one_leads_at_a_time(flight: SingleFlight) -> None:
    results = Results()
    first = flight.wait_or_lead("k", results.get, ttl_s=30, wait_s=0)
    assert first.found is None and first.lead_token is not None
    assert flight.wait_or_lead("k", results.get, ttl_s=30, wait_s=0) == Flight()
    assert flight.wait_or_lead("other", results.get, ttl_s=30, wait_s=0).lead_token is not None
    flight.release("k", first.lead_token)
    assert flight.wait_or_lead("k", results.get, ttl_s=30, wait_s=0).lead_token is not None


def test_a_duplicate_waits_and_gets_the_leaders_result(flight: SingleFlight) -> None:
    results = Results()
    lead = flight.wait_or_lead("k", results.get, ttl_s=30, wait_s=0).lead_token
    assert lead is not None
    waiting = threading.Event()
    waits: list[int] = []

    def on_wait() -> None:
        waits.append(1)
        waiting.set()

    got: list[Flight[str]] = []
    duplicate = threading.Thread(
        target=lambda: got.append(
            flight.wait_or_lead("k", results.get, ttl_s=30, wait_s=30, on_wait=on_wait)
        )
    )
    duplicate.start()
    assert waiting.wait(timeout=10)  # the duplicate found the lead taken
    results.value = "the leader's"
    flight.release("k", lead)
    duplicate.join(timeout=10)
    assert got == [Flight(found="the leader's")]
    assert waits == [1]  # told once, however long it waited
    assert flight.lead("k", 30) is not None  # the duplicate never led


def test_a_leader_that_gives_up_hands_the_lead_to_a_waiter(flight: SingleFlight) -> None:
    results = Results()
    lead = flight.wait_or_lead("k", results.get, ttl_s=30, wait_s=0).lead_token
    assert lead is not None
    waiting = threading.Event()
    got: list[Flight[str]] = []
    waiter = threading.Thread(
        target=lambda: got.append(
            flight.wait_or_lead("k", results.get, ttl_s=30, wait_s=30, on_wait=waiting.set)
        )
    )
    waiter.start()
    assert waiting.wait(timeout=10)
    flight.release("k", lead)  # failed: nothing stored
    waiter.join(timeout=10)
    assert len(got) == 1 and got[0].found is None and got[0].lead_token is not None


def test_a_dead_leaders_lead_expiring_lets_a_waiter_take_over(flight: SingleFlight) -> None:
    results = Results()
    assert flight.lead("k", 0.3) is not None  # a leader took it and died: never released
    started = time.monotonic()
    took_over = flight.wait_or_lead("k", results.get, ttl_s=30, wait_s=10)
    waited_s = time.monotonic() - started
    assert took_over.found is None and took_over.lead_token is not None
    assert 0.25 <= waited_s < 0.3 + MAX_PAUSE_S + 1.0  # its TTL, not the whole wait


@pytest.mark.parametrize("clip", [True, False], ids=["clipped", "whole-pauses"])
def test_the_wait_is_bounded(flight: SingleFlight, clip: bool) -> None:
    results = Results()
    assert flight.lead("k", 30) is not None  # a live leader that takes too long
    started = time.monotonic()
    gave_up = flight.wait_or_lead(
        "k", results.get, ttl_s=30, wait_s=1.0, clip_pause_to_deadline=clip
    )
    waited_s = time.monotonic() - started
    assert gave_up == Flight()
    overshoot_s = 0.5 if clip else MAX_PAUSE_S + 0.5
    assert 1.0 <= waited_s < 1.0 + overshoot_s
    # pauses that grow: a handful of looks in a second, not one every 50 ms
    assert 2 <= results.looks <= 10


def test_a_result_stored_just_before_the_lead_is_taken_not_redone(flight: SingleFlight) -> None:
    # the leader before us stored it and released between our look and our lead
    looks = iter([None, "stored meanwhile"])
    found = flight.wait_or_lead("k", lambda: next(looks), ttl_s=30, wait_s=0)
    assert found == Flight(found="stored meanwhile")
    assert flight.lead("k", 30) is not None  # the lead taken for the last look is given back


def test_a_look_that_fails_under_the_lead_gives_it_back(flight: SingleFlight) -> None:
    calls = iter([None])

    def get() -> str | None:
        try:
            return next(calls)
        except StopIteration:
            raise ConnectionError("store away") from None

    with pytest.raises(ConnectionError):
        flight.wait_or_lead("k", get, ttl_s=30, wait_s=0)
    assert flight.lead("k", 30) is not None
