from __future__ import annotations

import random

import pytest

from tasks.errors import (
    AttemptTimedOut,
    BudgetExhausted,
    FleetUnavailable,
    InvalidJob,
    JobBusy,
    ModelOutputInvalid,
    ModelRateLimited,
    ModelUnavailable,
    RetryableError,
    StorageUnavailable,
)
from tasks.retry_policy import OUTAGE_COUNTDOWN_MAX_S, RetryPolicy

POLICY = RetryPolicy(base_s=2.0, max_s=120.0, max_retries=8, output_retries=2)


def test_permanent_errors_are_never_retried() -> None:
    assert not POLICY.should_retry(InvalidJob("bad"), 0)


def test_transient_errors_retry_until_the_budget_is_spent() -> None:
    err = RetryableError("something of the job's own went wrong")
    assert [POLICY.should_retry(err, n) for n in (0, 7, 8)] == [True, True, False]


def test_unreadable_output_has_its_own_smaller_budget() -> None:
    err = ModelOutputInvalid("garbage", raw_text="??")
    assert [POLICY.should_retry(err, n) for n in (0, 1, 2)] == [True, True, False]


def test_backoff_grows_is_jittered_and_capped() -> None:
    rng = random.Random(7)
    err = RetryableError("something of the job's own went wrong")
    delays = [POLICY.countdown_s(err, n, rng) for n in range(10)]
    for n, delay in enumerate(delays):
        ceiling = min(120.0, 2.0 * 2**n)
        assert ceiling / 2 <= delay <= ceiling
    assert delays[5] > delays[0]
    assert len({round(d, 6) for d in delays[:5]}) == 5  # jittered, not a fixed ladder


def test_retry_delay_from_the_server_is_honoured() -> None:
    err = ModelRateLimited("429", retry_after_s=30)
    assert all(30 <= POLICY.countdown_s(err, 0, random.Random(s)) <= 30.5 for s in range(20))


@pytest.mark.parametrize("retry_after_s", [500.0, 10_000.0])
def test_no_countdown_exceeds_the_cap(retry_after_s: float) -> None:
    err = ModelRateLimited("429", retry_after_s=retry_after_s)
    assert POLICY.countdown_s(err, 3) <= 120.0


def test_busy_job_comes_back_soon() -> None:
    assert 2.0 <= POLICY.countdown_s(JobBusy("busy"), 0) <= 4.0


def test_waiting_never_uses_up_the_retries_of_real_failures() -> None:
    err = RetryableError("something of the job's own went wrong")
    # 45 of the 50 times the job went back it was waiting: 5 failures so far, 8 allowed
    assert POLICY.should_retry(err, 50, waits_so_far=45)
    assert not POLICY.should_retry(err, 50, waits_so_far=42)


def test_a_budget_wait_lasts_until_the_next_day_however_often() -> None:
    err = BudgetExhausted("spent", retry_after_s=7200.0, waits_for_day=True)
    assert POLICY.should_retry(err, 10_000, waits_so_far=10_000)
    assert POLICY.countdown_s(err, 0) <= 120.0  # back in the queue, never held for hours


def test_other_waits_are_bounded_against_a_stuck_holder() -> None:
    busy = JobBusy("busy")
    assert POLICY.should_retry(busy, 0, waits_so_far=200)
    assert not POLICY.should_retry(busy, 0, waits_so_far=201)


@pytest.mark.parametrize(
    "outage",
    [ModelUnavailable("503"), StorageUnavailable("S3 down"), FleetUnavailable("Redis down")],
    ids=["gemini", "storage", "redis"],
)
def test_a_service_that_is_down_is_waited_for_up_to_the_outage_bound_not_the_retries(
    outage: RetryableError,
) -> None:
    policy = RetryPolicy(
        base_s=2.0, max_s=120.0, max_retries=2, output_retries=2, max_outage_wait_s=600.0
    )
    # far more looks than retries: the job is not at fault
    assert policy.should_retry(outage, 500, waits_so_far=0, outage_s=599.0)
    assert not policy.should_retry(outage, 0, outage_s=601.0)


def test_an_outage_backs_off_on_its_own_count_up_to_thirty_seconds() -> None:
    rng = random.Random(3)
    outage = StorageUnavailable("S3 down")
    delays = [POLICY.countdown_s(outage, 0, rng, outage_waits=n) for n in range(12)]
    for n, delay in enumerate(delays):
        ceiling = min(OUTAGE_COUNTDOWN_MAX_S, 2.0 * 2**n)
        assert ceiling / 2 <= delay <= ceiling
    assert max(delays) <= OUTAGE_COUNTDOWN_MAX_S  # back within 30 s of the service's return


def test_a_timeout_still_has_its_own_small_budget() -> None:
    policy = RetryPolicy(base_s=1, max_s=10, max_retries=8, output_retries=2, max_timeouts=2)
    assert [policy.should_retry(AttemptTimedOut("slow"), n) for n in (0, 1, 2)] == [
        True,
        True,
        False,
    ]
