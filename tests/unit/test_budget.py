"""The fleet's day budget: admission, settling, and what a refused job is told
(fakeredis with Lua for the Redis script; the in-memory budget by the same tests)."""

from __future__ import annotations

import contextlib
import threading
import time

import fakeredis
import pytest

from tasks.errors import BudgetExhausted, QuotaExhausted
from tasks.pricing import expected_output_tokens
from worker.fleet.budget import DAY_S, LocalBudget, RedisBudget

Budget = RedisBudget | LocalBudget


def budgets(usd: float, count: int = 1) -> list[RedisBudget]:
    server = fakeredis.FakeServer()
    return [
        RedisBudget(fakeredis.FakeRedis(server=server), project="p", budget_usd=usd)
        for _ in range(count)
    ]


@pytest.fixture(params=["redis", "local"])
def budget(request: pytest.FixtureRequest) -> Budget:
    return budgets(1.0)[0] if request.param == "redis" else LocalBudget(budget_usd=1.0)


def test_reservations_never_commit_past_the_budget(budget: Budget) -> None:
    admitted = []
    for _ in range(5):
        with contextlib.suppress(BudgetExhausted):
            admitted.append(budget.reserve(0.3, max_wait_s=0))
    assert len(admitted) == 3  # 0.9 committed; a fourth would make 1.2
    today = budget.today()
    assert today is not None and today.reserved_usd == pytest.approx(0.9)


def test_settling_below_the_estimate_gives_room_back(budget: Budget) -> None:
    first = budget.reserve(0.6, max_wait_s=0)
    with pytest.raises(BudgetExhausted) as refused:
        budget.reserve(0.6, max_wait_s=0)
    # the room may come back before the day ends: come back in seconds, not hours
    assert refused.value.details["retry_after_s"] <= 5
    budget.settle(first, 0.1)  # the call cost less than its estimate
    assert budget.reserve(0.6, max_wait_s=0) is not None
    today = budget.today()
    assert today is not None
    assert (today.spent_usd, today.reserved_usd) == (pytest.approx(0.1), pytest.approx(0.6))


def test_a_spent_day_sends_jobs_back_until_the_next_day(budget: Budget) -> None:
    budget.settle(budget.reserve(0.5, max_wait_s=0), 0.95)  # cost more than estimated
    with pytest.raises(BudgetExhausted) as refused:
        budget.reserve(0.1, max_wait_s=0)
    # only the next UTC day helps: the job is told how long until then
    to_midnight_s = DAY_S - time.time() % DAY_S
    assert refused.value.details["retry_after_s"] == pytest.approx(to_midnight_s, abs=2)
    budget.ensure_open()  # 0.05 is left: a job may still read its images
    budget.settle(budget.reserve(0.05, max_wait_s=0), 0.2)
    with pytest.raises(BudgetExhausted):
        budget.ensure_open()  # nothing left: sent back before reading anything


def test_a_request_dearer_than_the_whole_day_is_refused_for_good(budget: Budget) -> None:
    with pytest.raises(QuotaExhausted, match="more than the whole day's budget"):
        budget.reserve(1.5, max_wait_s=0)


def test_a_refused_job_waits_for_room_within_the_wait(budget: Budget) -> None:
    held = budget.reserve(0.8, max_wait_s=0)
    waiting = threading.Semaphore(0)

    def settle_soon() -> None:
        waiting.acquire(timeout=10)
        budget.settle(held, 0.2)

    thread = threading.Thread(target=settle_soon)
    thread.start()
    real_try = budget._try

    def counting_try(estimate: int) -> tuple[bool, int, int, int, int]:
        result = real_try(estimate)
        if not result[0]:
            waiting.release()
        return result

    budget._try = counting_try  # type: ignore[method-assign,assignment]
    assert budget.reserve(0.5, max_wait_s=10) is not None
    thread.join()


def test_workers_racing_share_one_budget() -> None:
    fleet = budgets(1.0, count=4)
    admitted: list[object] = []
    lock = threading.Lock()

    def spend(worker: RedisBudget) -> None:
        for _ in range(10):
            try:
                reservation = worker.reserve(0.07, max_wait_s=0)
            except BudgetExhausted:
                continue
            with lock:
                admitted.append(reservation)

    threads = [threading.Thread(target=spend, args=(w,)) for w in fleet]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(admitted) == 14  # 14 x 0.07 = 0.98; the 15th would pass 1.0


def test_the_output_guess_follows_what_the_request_allows() -> None:
    none = expected_output_tokens(
        max_output_tokens=200, thinks=True, thinking_budget=0, thinking_level=None
    )
    assert none == 200
    assert (
        expected_output_tokens(
            max_output_tokens=None, thinks=False, thinking_budget=None, thinking_level=None
        )
        == 1024
    )
    assert (
        expected_output_tokens(
            max_output_tokens=None, thinks=True, thinking_budget=4096, thinking_level=None
        )
        == 1024 + 4096
    )
