"""A run's ledger (worker/runs/ledger.py): the Redis scripts and the in-memory twin pass one
contract. Counts stay right whatever order and however often moves are told (redelivery,
duplicates, retries), and a sealed run finishes once its last member ends."""

from __future__ import annotations

import random
import threading
from collections.abc import Iterator
from typing import Any

import fakeredis
import pytest

from worker.runs.ledger import LocalRunLedger, RedisRunLedger, RunLedger
from worker.runs.status import rate_per_min, summarize

RUN = "run-20261203-0001"
FOLDER = "s3://results/vision"


@pytest.fixture(params=["redis", "local"])
def ledger(request: pytest.FixtureRequest) -> Iterator[RunLedger]:
    if request.param == "redis":
        server = fakeredis.FakeServer()
        yield RedisRunLedger(fakeredis.FakeRedis(server=server), ttl_s=3600)
    else:
        yield LocalRunLedger()


def counts_of(ledger: RunLedger) -> dict[str, Any]:
    counts = ledger.counts(RUN)
    assert counts is not None
    return {
        "members": counts.members,
        **{k: v for k, v in counts.by_state.items() if v},
        **{f"failed:{k}": v for k, v in counts.failed_by_code.items()},
    }


def test_unknown_run_has_no_counts(ledger: RunLedger) -> None:
    assert ledger.counts(RUN) is None


def test_members_move_through_their_states_and_are_counted_once(ledger: RunLedger) -> None:
    assert ledger.add_members(RUN, ["a", "b", "c"], folder=FOLDER) == 3
    assert ledger.add_members(RUN, ["a"], folder=FOLDER) == 0  # a rerun's group: known
    assert counts_of(ledger) == {"members": 3, "queued": 3}
    assert ledger.move(RUN, "a", "r", folder=FOLDER).moved
    assert not ledger.move(RUN, "a", "r", folder=FOLDER).moved  # a redelivery
    ledger.move(RUN, "b", "w", folder=FOLDER)
    assert counts_of(ledger) == {"members": 3, "queued": 1, "running": 1, "waiting": 1}
    ledger.move(RUN, "a", "s", folder=FOLDER, cost_usd=0.25)
    ledger.move(RUN, "b", "f:model_error", folder=FOLDER)
    assert counts_of(ledger) == {
        "members": 3,
        "queued": 1,
        "succeeded": 1,
        "failed:model_error": 1,
    }
    counts = ledger.counts(RUN)
    assert counts is not None and counts.spent_usd == 0.25 and counts.folder == FOLDER


def test_an_ended_job_stays_ended_and_is_paid_once(ledger: RunLedger) -> None:
    ledger.add_members(RUN, ["a"], folder=FOLDER)
    ledger.move(RUN, "a", "s", folder=FOLDER, cost_usd=0.1)
    # a duplicate that ran late, a redelivery finding the record, a stray wait
    for state in ("r", "s", "w", "f:internal", "q"):
        assert not ledger.move(RUN, "a", state, folder=FOLDER, cost_usd=0.1).moved
    counts = ledger.counts(RUN)
    assert counts is not None
    assert counts_of(ledger) == {"members": 1, "succeeded": 1}
    assert counts.spent_usd == pytest.approx(0.1)


def test_a_job_the_run_did_not_send_joins_it(ledger: RunLedger) -> None:
    ledger.open(RUN, folder=FOLDER)
    ledger.move(RUN, "x", "r", folder=FOLDER)  # a producer named the run on its job
    ledger.move(RUN, "x", "s", folder=FOLDER)
    assert counts_of(ledger) == {"members": 1, "succeeded": 1}


def test_a_sealed_run_finishes_with_its_last_end_and_says_so_until_written(
    ledger: RunLedger,
) -> None:
    ledger.add_members(RUN, ["a", "b"], folder=FOLDER)
    assert not ledger.move(RUN, "a", "s", folder=FOLDER).finished
    assert not ledger.seal(RUN).finished  # b is still queued
    last = ledger.move(RUN, "b", "f:invalid_image", folder=FOLDER)
    assert last.moved and last.finished
    # the final summary is not written yet: a redelivery of b is told again
    assert ledger.move(RUN, "b", "f:invalid_image", folder=FOLDER).finished
    ledger.final_written(RUN)
    assert not ledger.move(RUN, "b", "f:invalid_image", folder=FOLDER).finished
    counts = ledger.counts(RUN)
    assert counts is not None and counts.finished_at is not None and counts.live == 0


def test_sealing_a_run_whose_members_all_ended_finishes_it(ledger: RunLedger) -> None:
    ledger.add_ended(RUN, {"a": "s", "b": "f:input_not_found"}, folder=FOLDER)
    assert counts_of(ledger) == {"members": 2, "succeeded": 1, "failed:input_not_found": 1}
    assert ledger.seal(RUN).finished


def test_an_empty_sealed_run_is_finished(ledger: RunLedger) -> None:
    ledger.open(RUN, folder=FOLDER)
    assert ledger.seal(RUN).finished


def test_reopen_sends_failed_jobs_back_and_the_run_into_a_new_round(ledger: RunLedger) -> None:
    ledger.add_members(RUN, ["a", "b"], folder=FOLDER)
    ledger.seal(RUN)
    ledger.move(RUN, "a", "s", folder=FOLDER)
    assert ledger.move(RUN, "b", "f:model_error", folder=FOLDER).finished
    ledger.final_written(RUN)
    assert ledger.reopen(RUN, ["a", "b", "nobody"]) == 1  # only the failed one moves
    counts = ledger.counts(RUN)
    assert counts is not None and counts.finished_at is None and counts.round == 1
    assert counts_of(ledger) == {"members": 2, "queued": 1, "succeeded": 1}
    assert ledger.move(RUN, "b", "s", folder=FOLDER).finished  # told again: a new round


def test_summary_turns_are_one_per_interval(ledger: RunLedger) -> None:
    assert ledger.summary_turn(RUN, every_s=60)
    assert not ledger.summary_turn(RUN, every_s=60)


def test_counts_hold_under_concurrent_duplicated_shuffled_moves(ledger: RunLedger) -> None:
    """Eight threads tell every job's moves, each job's sequence told by several threads
    at once and in any interleaving (redeliveries, duplicates): each job is counted in
    its final state exactly once, and the run finishes exactly once."""
    jobs = [f"job-{i:03d}" for i in range(120)]
    ledger.add_members(RUN, jobs, folder=FOLDER)
    ledger.seal(RUN)
    final = {job: ("s" if i % 4 else f"f:code{i % 3}") for i, job in enumerate(jobs)}
    finished: list[str] = []

    def tell(seed: int) -> None:
        rng = random.Random(seed)
        order = jobs[:]
        rng.shuffle(order)
        for job in order:
            for state in ("r", "w", "r", final[job]):
                if ledger.move(RUN, job, state, folder=FOLDER, cost_usd=0.01).finished:
                    finished.append(job)

    threads = [threading.Thread(target=tell, args=(seed,)) for seed in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    counts = ledger.counts(RUN)
    assert counts is not None
    assert counts.by_state["succeeded"] == sum(1 for s in final.values() if s == "s")
    assert counts.failed == 30 and counts.live == 0 and counts.members == 120
    assert counts.spent_usd == pytest.approx(1.2)  # each end paid once
    assert finished  # told (possibly more than once until the final summary is written)
    states = ledger.states(RUN)
    assert states == final


def test_rate_and_eta_come_from_the_last_minutes() -> None:
    ledger = LocalRunLedger()
    ledger.add_members(RUN, [f"j{i}" for i in range(100)], folder=FOLDER)
    ledger.seal(RUN)
    for i in range(40):
        ledger.move(RUN, f"j{i}", "s", folder=FOLDER)
    counts = ledger.counts(RUN)
    assert counts is not None
    (minute,) = counts.ended_per_minute
    now_s = minute * 60 + 30.0  # half a minute into the minute the 40 ended in
    assert rate_per_min(counts, now_s) == pytest.approx(80.0)
    summary = summarize(RUN, counts, None, now_s=now_s)
    assert summary.counts["queued"] == 60 and summary.eta_s == pytest.approx(45.0)
    assert summary.state == "running"
    # ends older than the window no longer count
    assert rate_per_min(counts, now_s + 10 * 60) == 0.0


def test_without_a_cap_every_reservation_is_granted(ledger: RunLedger) -> None:
    ledger.open(RUN, folder=FOLDER)
    assert all(ledger.reserve(RUN, f"j{i}", 100.0) for i in range(5))


def test_the_cap_admits_what_fits_and_a_job_has_one_reservation(ledger: RunLedger) -> None:
    ledger.open(RUN, folder=FOLDER)
    ledger.set_cap(RUN, 1.0)
    assert ledger.reserve(RUN, "a", 0.4)
    assert ledger.reserve(RUN, "b", 0.4)
    assert not ledger.reserve(RUN, "c", 0.4)  # 1.2 > 1.0
    assert ledger.reserve(RUN, "a", 0.4)  # a retry of a replaces its own reservation
    ledger.settle(RUN, "a", 0.1)  # answered below its estimate: room comes back
    assert ledger.reserve(RUN, "c", 0.4)
    counts = ledger.counts(RUN)
    assert counts is not None
    assert counts.max_usd == 1.0
    assert counts.paid_usd == pytest.approx(0.1)
    assert counts.reserved_usd == pytest.approx(0.8)


def test_a_raised_cap_releases_held_jobs_to_the_queue(ledger: RunLedger) -> None:
    ledger.add_members(RUN, ["a", "b"], folder=FOLDER)
    ledger.set_cap(RUN, 0.0)
    ledger.move(RUN, "a", "r", folder=FOLDER)
    assert not ledger.reserve(RUN, "a", 0.01)
    ledger.hold(RUN, "a", '{"job_id": "a"}', folder=FOLDER)
    assert counts_of(ledger) == {"members": 2, "queued": 1, "held": 1}
    ledger.set_cap(RUN, 5.0)
    assert ledger.release(RUN) == {"a": '{"job_id": "a"}'}
    assert ledger.release(RUN) == {}  # released once
    assert counts_of(ledger) == {"members": 2, "queued": 2}
    assert ledger.reserve(RUN, "a", 0.01)


def test_concurrent_reservations_never_pass_the_cap(ledger: RunLedger) -> None:
    """Eight threads reserve and settle calls whose cost is at most their estimate: what
    is paid never passes the cap."""
    ledger.open(RUN, folder=FOLDER)
    ledger.set_cap(RUN, 2.0)
    paid: list[float] = []
    lock = threading.Lock()

    def worker(index: int) -> None:
        rng = random.Random(index)
        for call in range(50):
            job = f"w{index}-{call}"
            if ledger.reserve(RUN, job, 0.05):
                cost = rng.uniform(0.01, 0.05)
                ledger.settle(RUN, job, cost)
                with lock:
                    paid.append(cost)

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    counts = ledger.counts(RUN)
    assert counts is not None
    assert sum(paid) <= 2.0 + 1e-6
    assert counts.paid_usd == pytest.approx(sum(paid), abs=1e-5)
    assert counts.reserved_usd == 0
    assert sum(paid) > 2.0 - 0.05 - 1e-6  # and the cap is used: within one request of it


def test_every_key_of_a_run_expires_and_touch_renews_it() -> None:
    client = fakeredis.FakeRedis(server=fakeredis.FakeServer())
    ledger = RedisRunLedger(client, ttl_s=600)
    ledger.add_members(RUN, ["a"], folder=FOLDER)
    ledger.move(RUN, "b", "r", folder=FOLDER)  # a job the run did not send
    ledger.move(RUN, "a", "s", folder=FOLDER)
    keys = [k.decode() for k in client.keys(f"gvw:run:{RUN}:*")]
    assert {k.rsplit(":", 1)[1] for k in keys} == {"jobs", "counts", "meta", "minutes"}
    assert all(0 < client.ttl(k) <= 600 for k in keys)
    for key in keys:
        client.expire(key, 5)
    ledger.touch(RUN)
    assert all(client.ttl(k) > 5 for k in keys)


def test_rebuild_replaces_the_counts_with_what_storage_holds(ledger: RunLedger) -> None:
    ledger.add_members(RUN, ["a", "b", "stale"], folder=FOLDER)
    ledger.move(RUN, "stale", "r", folder=FOLDER)
    ledger.rebuild(
        RUN, {"a": "s", "b": "f:invalid_image", "c": "q"}, folder=FOLDER, sealed=True,
        spent_usd=0.5,
    )  # fmt: skip
    assert counts_of(ledger) == {
        "members": 3, "queued": 1, "succeeded": 1, "failed:invalid_image": 1,
    }  # fmt: skip
    counts = ledger.counts(RUN)
    assert counts is not None and counts.sealed and counts.spent_usd == 0.5
    assert ledger.move(RUN, "c", "s", folder=FOLDER).finished


def test_settling_a_call_that_reserved_nothing_is_no_error(ledger: RunLedger) -> None:
    """A call asked while the run had no cap (lifted by a resume) reserved nothing: its
    settle only adds what it cost."""
    ledger.open(RUN, folder=FOLDER)
    assert ledger.reserve(RUN, "a", 0.2)  # no cap: nothing kept
    ledger.settle(RUN, "a", 0.1)
    ledger.set_cap(RUN, 1.0)
    counts = ledger.counts(RUN)
    assert counts is not None and counts.paid_usd == pytest.approx(0.1)
    assert counts.reserved_usd == 0
