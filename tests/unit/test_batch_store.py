"""Batch mode's state: the fleet's store (Redis, here fakeredis with its Lua) and the
local one (`gvw demo`, the fast pipeline tests) behave alike, step by step."""

from __future__ import annotations

import fakeredis
import pytest

from worker.fleet.batch_store import Batches, BatchStore, LocalBatchStore


@pytest.fixture(params=["redis", "local"])
def store(request: pytest.FixtureRequest) -> Batches:
    if request.param == "redis":
        return BatchStore(fakeredis.FakeRedis())
    return LocalBatchStore()


def add(store: Batches, job_id: str, model: str = "m") -> bool:
    return store.add_job(
        job_id,
        job={"job_id": job_id, "task": "caption"},
        request={"contents": []},
        model=model,
        fingerprint="f",
        transports=["file_api"],
        estimate_usd=0.001,
        timings_ms={"fetch": 1.5},
        images=[{"uri": "s3://inbox/a.png"}],
    )


def test_a_job_waits_is_batched_tried_sent_back_and_forgotten(store: Batches) -> None:
    assert add(store, "a") and add(store, "b") and not add(store, "a")  # a redelivery
    assert store.waiting_in("a") == "" and store.waiting_in("nobody") is None
    assert store.pending_models() == ["m"] and store.pending_count("m") == 2
    assert store.timings_ms("a") == {"fetch": 1.5}
    assert store.images("a") == [{"uri": "s3://inbox/a.png"}]
    assert store.has_work()

    record = store.take("m", 1)
    assert record is not None and record.job_ids == ["a"] and record.state == "assembled"
    assert store.waiting_in("a") == record.batch_id and store.pending_count("m") == 1
    assert store.open_batches() == [record.batch_id]

    store.update(record.batch_id, state="submitted", name="batches/x", submitted_at="12.5")
    again = store.batch(record.batch_id)
    assert again is not None and (again.state, again.name) == ("submitted", "batches/x")
    assert again.submitted_at == 12.5

    waiting = store.job("a")
    assert waiting is not None and waiting.tries == 0 and waiting.request == {"contents": []}
    assert store.count_try("a") == 1
    store.requeue("a", "m")
    assert store.waiting_in("a") == "" and store.pending_count("m") == 2
    store.close(record.batch_id, "returned")
    assert store.open_batches() == []
    closed = store.batch(record.batch_id)
    assert closed is not None and closed.state == "returned" and closed.ended_at is not None

    store.forget_job("a")
    assert not store.is_waiting("a") and store.job("a") is None
    assert [b.batch_id for b in store.all_batches()] == [record.batch_id]


def test_one_follower_run_is_scheduled_and_one_runs(store: Batches) -> None:
    assert store.claim_tick(within_s=60) and not store.claim_tick(within_s=60)
    store.release_tick()
    assert store.claim_tick(within_s=60)
    with store.follower_lock() as token:
        assert token is not None
        with store.follower_lock() as second:
            assert second is None  # one run at a time
    with store.follower_lock() as again:
        assert again is not None  # released at the end of the run
    assert not store.has_work() and store.take("m", 10) is None


def test_a_job_listed_twice_or_forgotten_is_not_put_in_a_batch(store: Batches) -> None:
    # a follower that died between a requeue and closing its batch requeues again
    assert add(store, "a") and add(store, "b")
    store.requeue("a", "m")
    store.requeue("a", "m")
    store.forget_job("b")
    record = store.take("m", 10)
    assert record is not None and record.job_ids == ["a"]  # once, and b not at all
    assert store.pending_count("m") == 0


def test_a_killed_follower_holds_batch_mode_up_for_seconds_not_minutes() -> None:
    # a run killed mid-way never releases its lock: the lock's life is what it costs
    client = fakeredis.FakeRedis()
    with BatchStore(client).follower_lock() as token:
        assert token is not None
        assert 0 < int(client.pttl("gvw:batch:lock")) <= 15_000
