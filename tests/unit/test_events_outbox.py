"""The events outbox (worker/events/outbox.py): the Redis adapter (on fakeredis, with its
Lua) and its in-memory twin pass the same contract, each test a promise of `Outbox`."""

from __future__ import annotations

import time

import fakeredis
import pytest

from worker.events import outbox as outbox_module
from worker.events.outbox import LocalOutbox, Outbox, RedisOutbox, delivery_id
from worker.events.records import Event, make_event

ADAPTERS = ["redis", "local"]
LEASE_S = 30.0


@pytest.fixture(params=ADAPTERS)
def outbox(request: pytest.FixtureRequest) -> Outbox:
    if request.param == "redis":
        return RedisOutbox(fakeredis.FakeRedis())
    return LocalOutbox()


def event(subject: str = "job-1") -> Event:
    return make_event("job.completed", subject, {"job_id": subject, "status": "succeeded"})


def test_an_event_is_kept_once_per_destination(outbox: Outbox) -> None:
    now = time.time()
    first = event()
    assert outbox.add(first, "sqs:gvw-a", now=now) is True
    assert outbox.add(first, "sqs:gvw-a", now=now) is False  # emitted again: kept once
    assert outbox.add(event(), "sqs:gvw-a", now=now + 1) is False  # same id, later
    assert outbox.add(first, "sqs:gvw-b", now=now) is True  # another destination
    assert outbox.pending_count() == 2
    assert {d.destination for d in outbox.of_event(first.id)} == {"sqs:gvw-a", "sqs:gvw-b"}
    kept = outbox.get(delivery_id(first.id, "sqs:gvw-a"))
    assert kept is not None
    assert (kept.event_id, kept.type, kept.state, kept.attempts) == (
        first.id,
        "job.completed",
        "pending",
        0,
    )
    assert kept.body == first.body()


def test_a_claim_counts_an_attempt_and_leases_the_delivery(outbox: Outbox) -> None:
    now = time.time()
    outbox.add(event(), "sqs:gvw-a", now=now)
    claimed = outbox.claim(now=now, limit=10, lease_s=LEASE_S, token="run-1")
    assert [(d.attempts, d.lease) for d in claimed] == [(1, "run-1")]
    # leased: no other run gets it while the lease lasts
    assert outbox.claim(now=now + 1, limit=10, lease_s=LEASE_S, token="run-2") == []
    assert outbox.next_due() == pytest.approx(now + LEASE_S, abs=0.01)
    # a run killed mid-delivery settles nothing: due again when its lease ends
    again = outbox.claim(now=now + LEASE_S + 1, limit=10, lease_s=LEASE_S, token="run-2")
    assert [(d.attempts, d.lease) for d in again] == [(2, "run-2")]
    # the first run, back from a long pause, cannot settle what run-2 holds now
    ident = again[0].delivery_id
    assert outbox.delivered(ident, "run-1", now=now + LEASE_S + 2) is False
    assert outbox.delivered(ident, "run-2", now=now + LEASE_S + 2) is True


def test_claims_take_due_deliveries_only_and_at_most_the_limit(outbox: Outbox) -> None:
    now = time.time()
    for index in range(5):
        outbox.add(event(f"job-{index}"), "sqs:gvw-a", now=now + index)
    assert len(outbox.claim(now=now + 2, limit=10, lease_s=LEASE_S, token="t")) == 3
    assert len(outbox.claim(now=now + 10, limit=1, lease_s=LEASE_S, token="t")) == 1
    assert len(outbox.claim(now=now + 10, limit=10, lease_s=LEASE_S, token="t")) == 1


def test_a_delivered_delivery_is_done(outbox: Outbox) -> None:
    now = time.time()
    outbox.add(event(), "sqs:gvw-a", now=now)
    (claimed,) = outbox.claim(now=now, limit=10, lease_s=LEASE_S, token="t")
    assert outbox.delivered(claimed.delivery_id, "t", now=now)
    assert outbox.next_due() is None
    assert outbox.pending_count() == 0
    kept = outbox.get(claimed.delivery_id)
    assert kept is not None and kept.state == "delivered" and kept.next_at is None
    assert outbox.claim(now=now + 10**6, limit=10, lease_s=LEASE_S, token="t") == []
    # still remembered: the same event emitted again is not delivered twice
    assert outbox.add(event(), "sqs:gvw-a", now=now + 5) is False


def test_a_failed_attempt_is_due_again_at_its_backoff(outbox: Outbox) -> None:
    now = time.time()
    outbox.add(event(), "sqs:gvw-a", now=now)
    (claimed,) = outbox.claim(now=now, limit=10, lease_s=LEASE_S, token="t")
    assert outbox.retry_at(claimed.delivery_id, "t", error="HTTP 503", at=now + 60, now=now)
    kept = outbox.get(claimed.delivery_id)
    assert kept is not None
    assert (kept.state, kept.error, kept.attempts, kept.lease) == ("pending", "HTTP 503", 1, "")
    assert kept.next_at == pytest.approx(now + 60, abs=0.01)
    assert outbox.claim(now=now + 59, limit=10, lease_s=LEASE_S, token="t") == []
    assert len(outbox.claim(now=now + 60, limit=10, lease_s=LEASE_S, token="t")) == 1


def test_a_failed_delivery_is_listed_and_can_be_redelivered(outbox: Outbox) -> None:
    now = time.time()
    outbox.add(event("a"), "sqs:gvw-a", now=now)
    outbox.add(event("b"), "sqs:gvw-a", now=now + 1)
    claimed = outbox.claim(now=now + 1, limit=10, lease_s=LEASE_S, token="t")
    failing = next(d for d in claimed if d.event_id == event("a").id)
    other = next(d for d in claimed if d.event_id == event("b").id)
    assert outbox.failed(failing.delivery_id, "t", error="8 attempts failed", now=now + 2)
    outbox.delivered(other.delivery_id, "t", now=now + 2)
    assert [d.delivery_id for d in outbox.listing(limit=10, failed_only=True)] == [
        failing.delivery_id
    ]
    assert outbox.failed_ids(limit=10) == [failing.delivery_id]
    assert [d.state for d in outbox.listing(limit=10)] == ["delivered", "failed"]  # newest first
    assert outbox.next_due() is None
    assert outbox.redeliver([failing.delivery_id, "evt_unknown.0"], now=now + 3) == 1
    assert outbox.failed_ids(limit=10) == []
    again = outbox.claim(now=now + 3, limit=10, lease_s=LEASE_S, token="t2")
    assert [(d.delivery_id, d.attempts, d.error) for d in again] == [(failing.delivery_id, 1, "")]


def test_the_outbox_refuses_events_past_its_bound(
    outbox: Outbox, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(outbox_module, "PENDING_MAX", 2)
    now = time.time()
    assert outbox.add(event("a"), "sqs:gvw-a", now=now) is True
    assert outbox.add(event("b"), "sqs:gvw-a", now=now) is True
    assert outbox.add(event("c"), "sqs:gvw-a", now=now) is None


def test_a_run_is_requested_once_until_it_runs(outbox: Outbox) -> None:
    now = time.time()
    assert outbox.request_run(at=now, now=now) is True
    assert outbox.request_run(at=now + 0.5, now=now) is False  # scheduled in time already
    assert outbox.request_run(at=now + 30, now=now) is False
    # a run scheduled later than wanted does not do: an earlier one is asked for
    later = RedisOutbox(fakeredis.FakeRedis()) if isinstance(outbox, RedisOutbox) else LocalOutbox()
    assert later.request_run(at=now + 60, now=now)
    assert later.request_run(at=now, now=now)


def test_a_run_ending_schedules_the_next_only_while_deliveries_wait(outbox: Outbox) -> None:
    now = time.time()
    outbox.request_run(at=now, now=now)
    assert outbox.finish_run(now=now) is None  # nothing waits: no next run
    assert outbox.request_run(at=now, now=now) is True  # and the schedule was cleared
    outbox.add(event(), "sqs:gvw-a", now=now)
    (claimed,) = outbox.claim(now=now, limit=10, lease_s=LEASE_S, token="t")
    outbox.retry_at(claimed.delivery_id, "t", error="down", at=now + 60, now=now)
    next_at = outbox.finish_run(now=now + 1)
    assert next_at == pytest.approx(now + 60, abs=0.01)
    # a second run ending meanwhile (a duplicate) finds that run scheduled: chains die out
    assert outbox.finish_run(now=now + 2) is None
    # an event emitted now wants a run before that one
    assert outbox.request_run(at=now + 3, now=now + 3) is True


def test_one_delivery_run_at_a_time(outbox: Outbox) -> None:
    with outbox.run_lock() as first:
        assert first is not None
        with outbox.run_lock() as second:
            assert second is None
    with outbox.run_lock() as after:
        assert after is not None
