"""One contract per port of worker/fleet/: the Redis adapter (on fakeredis, with its Lua)
and its in-memory twin (`gvw demo`, single processes, the fast pipeline tests) pass the
same tests, each a promise the port's docstrings make to its users.

Ports whose shared contract lives elsewhere: TokenLocks (test_token_lock.py), Budget
(test_budget.py), Batches (test_batch_store.py), AnswerCache (test_answer_cache.py),
FileCache (test_file_cache.py), and the events outbox of worker/events/
(test_events_outbox.py). Here: AnswerStore, Deliveries, JobClaims, JobLocks,
Refusals.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

import fakeredis
import pytest

from worker.fleet import refusals as refusals_module
from worker.fleet.answer_store import AnswerStore, LocalAnswerStore, RedisAnswerStore
from worker.fleet.dead_letters import DeadLetters, LocalDeadLetters, RedisDeadLetters
from worker.fleet.deliveries import Deliveries, LocalDeliveries, RedisDeliveries
from worker.fleet.job_claims import JobClaims, LocalJobClaims, RedisJobClaims
from worker.fleet.job_locks import JobLocks, LocalJobLocks, RedisJobLocks
from worker.fleet.refusals import REFUSALS_PER_ID, LocalRefusals, RedisRefusals, Refusals
from worker.gemini import ModelAnswer, TokenUsage

ADAPTERS = ["redis", "local"]


def answer(text: str = "a red circle") -> ModelAnswer:
    return ModelAnswer(text, "STOP", TokenUsage(10, 5, 15, 0), "gemini-2.5-flash")


# ---- AnswerStore: a job's paid answer, for that job only ------------------------------------


@pytest.fixture(params=ADAPTERS)
def make_answers(request: pytest.FixtureRequest) -> Callable[..., AnswerStore]:
    if request.param == "redis":
        return lambda **kw: RedisAnswerStore(fakeredis.FakeRedis(), **kw)
    return lambda **kw: LocalAnswerStore(**kw)


def test_answer_store_hands_an_answer_back_to_the_job_that_paid_for_it(
    make_answers: Callable[..., AnswerStore],
) -> None:
    answers = make_answers()
    assert answers.get("j", "fp-1") is None
    assert answers.put("j", "fp-1", answer(), ["inline", "file_api"])
    assert answers.get("j", "fp-1") == (answer(), ["inline", "file_api"])
    assert answers.get("j", "fp-other") is None  # another job reusing the id
    assert answers.get("k", "fp-1") is None


def test_answer_store_forgets_an_unreadable_answer(
    make_answers: Callable[..., AnswerStore],
) -> None:
    answers = make_answers()
    answers.put("j", "fp-1", answer(), ["inline"])
    answers.forget("j")
    assert answers.get("j", "fp-1") is None
    answers.forget("never-stored")  # nothing to forget: no error


def test_answer_store_entries_expire_after_their_ttl(
    make_answers: Callable[..., AnswerStore],
) -> None:
    answers = make_answers(ttl_s=1)
    answers.put("j", "fp-1", answer(), ["inline"])
    assert answers.get("j", "fp-1") is not None
    time.sleep(1.2)
    assert answers.get("j", "fp-1") is None


def test_answer_store_does_not_keep_an_answer_too_large(
    make_answers: Callable[..., AnswerStore],
) -> None:
    answers = make_answers()  # the default bound: 4,000,000 bytes
    huge = answer("x" * 4_100_000)
    assert not answers.put("j", "fp-1", huge, ["inline"])
    assert answers.get("j", "fp-1") is None  # re-asked instead


# ---- Deliveries: delivery, wait and time-limit counts --------------------------------------


@pytest.fixture(params=ADAPTERS)
def deliveries(request: pytest.FixtureRequest) -> Deliveries:
    if request.param == "redis":
        return RedisDeliveries(fakeredis.FakeRedis())
    return LocalDeliveries()


def test_deliveries_are_counted_per_attempt(deliveries: Deliveries) -> None:
    assert [deliveries.count("j", 0) for _ in range(3)] == [1, 2, 3]
    assert deliveries.count("j", 1) == 1  # a Celery retry is a new attempt
    assert deliveries.count("other", 0) == 1
    deliveries.clear("j", 0)
    assert deliveries.count("j", 0) == 1
    assert deliveries.count("j", 1) == 2  # clearing one attempt leaves the others


def test_waits_are_counted_apart_from_deliveries(deliveries: Deliveries) -> None:
    assert deliveries.waits("j") == 0
    assert [deliveries.count_wait("j") for _ in range(2)] == [1, 2]
    assert deliveries.waits("j") == 2
    assert deliveries.count("j", 0) == 1  # a wait is no delivery of any attempt
    deliveries.forget("j")
    assert deliveries.waits("j") == 0
    assert deliveries.count("j", 0) == 1
    assert deliveries.waits("other") == 0


def test_time_limit_kills_are_counted_apart_and_forgotten_with_the_job(
    deliveries: Deliveries,
) -> None:
    assert [deliveries.count_timeout("j") for _ in range(2)] == [1, 2]
    assert deliveries.count("j", 0) == 1  # no delivery of any attempt
    assert deliveries.waits("j") == 0
    deliveries.forget("j")
    assert deliveries.count_timeout("j") == 1


# ---- DeadLetters: jobs that failed for good, and their records ------------------------------


@pytest.fixture(params=ADAPTERS)
def dead_letters(request: pytest.FixtureRequest) -> DeadLetters:
    if request.param == "redis":
        return RedisDeadLetters(fakeredis.FakeRedis())
    return LocalDeadLetters()


def test_a_dead_letter_keeps_its_record_until_it_is_written(dead_letters: DeadLetters) -> None:
    job = {"job_id": "a", "task": "caption", "images": ["s3://in/a.jpg"]}
    dead_letters.dead_letter(
        "a",
        code="internal",
        message="storage down",
        attempts=2,
        job=job,
        fingerprint="fp-a",
        record=b'{"status": "failed"}',
    )
    assert dead_letters.pending_record("a") == b'{"status": "failed"}'
    letter = dead_letters.get("a")
    assert letter is not None
    assert (letter.job_id, letter.code, letter.message, letter.attempts) == (
        "a",
        "internal",
        "storage down",
        2,
    )
    assert (letter.job, letter.fingerprint, letter.recorded) == (job, "fp-a", False)
    assert abs(letter.when - time.time()) < 60
    dead_letters.mark_recorded("a")
    assert dead_letters.pending_record("a") is None
    recorded = dead_letters.get("a")
    assert recorded is not None and recorded.recorded and recorded.code == "internal"


def test_a_dead_letter_without_a_record_or_job_has_nothing_pending(
    dead_letters: DeadLetters,
) -> None:
    dead_letters.dead_letter("a", code="invalid_job", message="bad", attempts=1, job=None)
    assert dead_letters.pending_record("a") is None
    letter = dead_letters.get("a")
    assert letter is not None and letter.job is None and letter.fingerprint == ""
    assert dead_letters.get("never-failed") is None
    assert dead_letters.pending_record("never-failed") is None


def test_dead_letters_are_listed_newest_first_and_removable(dead_letters: DeadLetters) -> None:
    for job_id in ("a", "b", "c"):
        dead_letters.dead_letter(job_id, code="internal", message="m", attempts=1, job={})
        time.sleep(0.01)
    assert [d.job_id for d in dead_letters.dead_letters()] == ["c", "b", "a"]
    assert [d.job_id for d in dead_letters.dead_letters(limit=2)] == ["c", "b"]
    dead_letters.remove("b")
    assert dead_letters.get("b") is None
    assert [d.job_id for d in dead_letters.dead_letters()] == ["c", "a"]


def test_a_dead_letter_is_bounded_whatever_the_job(dead_letters: DeadLetters) -> None:
    job = {"job_id": "a", "task": "caption", "images": ["s3://in/a.jpg"], "x": "y" * 100_000}
    dead_letters.dead_letter("a", code="invalid_job", message="m" * 100_000, attempts=1, job=job)
    letter = dead_letters.get("a")
    assert letter is not None and len(letter.message) == 2000
    assert letter.job is not None and letter.job["truncated"] is True
    assert letter.job["images"] == ["s3://in/a.jpg"]


# ---- JobClaims: a job id belongs to the first job that used it ------------------------------


@pytest.fixture(params=ADAPTERS)
def make_claims(request: pytest.FixtureRequest) -> Callable[..., JobClaims]:
    if request.param == "redis":
        return lambda ttl_s=60: RedisJobClaims(fakeredis.FakeRedis(), ttl_s=ttl_s)
    return lambda ttl_s=60: LocalJobClaims(ttl_s=ttl_s)


def test_an_id_belongs_to_the_first_job_that_used_it(
    make_claims: Callable[..., JobClaims],
) -> None:
    claims = make_claims()
    first = claims.claim("j", "fp-1", "s3://r/v/j")
    assert first.ours and not first.pending_record
    assert claims.claim("j", "fp-1", "s3://r/v/j").ours  # a redelivery, a producer's retry
    other = claims.claim("j", "fp-2", "s3://r/thief/j")
    assert not other.ours and other.holder_folder == "s3://r/v/j"
    elsewhere = claims.claim("j", "fp-1", "s3://r/elsewhere/j")  # the same job, other output
    assert not elsewhere.ours and elsewhere.holder_folder == "s3://r/v/j"
    assert claims.claim("k", "fp-2", "s3://r/thief/k").ours  # other ids are untouched


def test_a_claim_lasts_its_ttl_from_the_last_use(make_claims: Callable[..., JobClaims]) -> None:
    claims = make_claims(ttl_s=1)
    assert claims.claim("j", "fp-1", "f1").ours
    time.sleep(0.6)
    assert claims.claim("j", "fp-1", "f1").ours  # used again: the claim lasts from now
    time.sleep(0.6)
    assert not claims.claim("j", "fp-2", "f2").ours  # past the first use's TTL, still held
    time.sleep(0.6)
    assert claims.claim("j", "fp-2", "f2").ours  # expired: the id is free again


# ---- JobLocks: one live worker pays for a job's model call at a time -----------------------


@pytest.fixture(params=ADAPTERS)
def job_locks(request: pytest.FixtureRequest) -> JobLocks:
    if request.param == "redis":
        return RedisJobLocks(fakeredis.FakeRedis(), ttl_s=1.0)
    return LocalJobLocks(ttl_s=1.0)


def test_one_holder_of_a_jobs_lock_at_a_time(job_locks: JobLocks) -> None:
    with job_locks.hold("job-1") as first:
        assert first
        with job_locks.hold("job-1") as second:
            assert not second
        with job_locks.hold("job-2") as other:
            assert other
    with job_locks.hold("job-1") as again:
        assert again  # freed at the end of the block


def test_a_jobs_lock_is_freed_when_its_holder_fails(job_locks: JobLocks) -> None:
    with pytest.raises(RuntimeError), job_locks.hold("job-1") as held:
        assert held
        raise RuntimeError("the job failed")
    with job_locks.hold("job-1") as again:
        assert again


def test_a_live_holder_keeps_the_lock_past_its_ttl(job_locks: JobLocks) -> None:
    with job_locks.hold("job-1") as first:
        assert first
        time.sleep(1.5)  # past the TTL: renewed while the holder runs
        seen: list[bool] = []

        def other_worker() -> None:
            with job_locks.hold("job-1") as second:
                seen.append(second)

        thread = threading.Thread(target=other_worker)
        thread.start()
        thread.join(timeout=10)
        assert seen == [False]


# ---- Refusals: jobs refused under an id another job holds ---------------------------------


@pytest.fixture(params=ADAPTERS)
def refusals(request: pytest.FixtureRequest) -> Refusals:
    if request.param == "redis":
        return RedisRefusals(fakeredis.FakeRedis())
    return LocalRefusals()


def test_a_refused_jobs_record_is_kept_by_id_and_fingerprint(refusals: Refusals) -> None:
    assert refusals.refused("j", "fp-2") is None
    refusals.refuse("j", "fp-2", b'{"n": 2}')
    assert refusals.refused("j", "fp-2") == b'{"n": 2}'
    assert refusals.refused("j", "fp-3") is None
    assert refusals.refused("k", "fp-2") is None
    refusals.refuse("j", "fp-2", b'{"n": 2, "again": true}')  # sent again: the newest record
    assert refusals.refused("j", "fp-2") == b'{"n": 2, "again": true}'


def test_refusals_are_listed_newest_first(refusals: Refusals) -> None:
    for job_id, fingerprint in (("j", "fp-2"), ("k", "fp-9"), ("j", "fp-3")):
        refusals.refuse(job_id, fingerprint, f'{{"fp": "{fingerprint}"}}'.encode())
        time.sleep(0.01)
    of_j = refusals.of_job("j")
    assert [(r.job_id, r.fingerprint) for r in of_j] == [("j", "fp-3"), ("j", "fp-2")]
    assert of_j[0].record == b'{"fp": "fp-3"}'
    assert of_j[0].when >= of_j[1].when > 0
    assert refusals.of_job("nobody") == []
    latest = [(r.job_id, r.fingerprint) for r in refusals.latest()]
    assert latest == [("j", "fp-3"), ("k", "fp-9"), ("j", "fp-2")]
    assert [r.fingerprint for r in refusals.latest(limit=2)] == ["fp-3", "fp-9"]
    refusals.refuse("j", "fp-2", b"{}")  # refused again: the newest now
    assert [r.fingerprint for r in refusals.latest(limit=1)] == ["fp-2"]


def test_refusals_of_one_id_are_bounded(refusals: Refusals) -> None:
    for n in range(REFUSALS_PER_ID + 5):
        refusals.refuse("j", f"fp-{n}", b"{}")
    assert len(refusals.of_job("j")) == REFUSALS_PER_ID
    assert refusals.refused("j", f"fp-{REFUSALS_PER_ID}") is None  # one too many: dropped
    refusals.refuse("j", "fp-0", b'{"again": true}')  # one already kept is still updated
    assert refusals.refused("j", "fp-0") == b'{"again": true}'


def test_the_fleets_list_of_refusals_keeps_the_newest(
    refusals: Refusals, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(refusals_module, "REFUSALS_MAX", 3)  # 10,000 in production
    for n in range(5):
        refusals.refuse(f"job-{n}", "fp", b"{}")
        time.sleep(0.01)
    assert [r.job_id for r in refusals.latest()] == ["job-4", "job-3", "job-2"]
