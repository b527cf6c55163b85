"""The answer cache's own logic: the key, single flight, and what is never handed on.
fakeredis for the Redis store's primitives; the pipeline tests drive it end to end."""

from __future__ import annotations

import threading

import fakeredis
import pytest

from tasks.base import ModelRequest
from worker.fleet.answer_cache import LocalAnswerCache, RedisAnswerCache, answer_key
from worker.gemini.records import GenerationOptions, ModelAnswer, TokenUsage

Cache = RedisAnswerCache | LocalAnswerCache

ANSWER = ModelAnswer("a red circle", "STOP", TokenUsage(300, 20, 320, 0), "gemini-2.5-flash")


def key(**change: object) -> str:
    fields: dict[str, object] = {
        "model": "gemini-2.5-flash",
        "request": ModelRequest(prompt="Describe it."),
        "options": GenerationOptions(),
        "images": [("a" * 64, "image/png")],
        **change,
    }
    return answer_key(**fields)  # type: ignore[arg-type]


def test_the_key_covers_everything_that_shapes_the_answer() -> None:
    variants = [
        key(),
        key(model="gemini-2.5-pro"),
        key(request=ModelRequest(prompt="Describe it!")),
        key(request=ModelRequest(prompt="Describe it.", system_instruction="Be terse.")),
        key(request=ModelRequest(prompt="Describe it.", response_json_schema={"type": "object"})),
        key(request=ModelRequest(prompt="Describe it.", spatial=True)),
        key(options=GenerationOptions(temperature=0.5)),
        key(options=GenerationOptions(max_output_tokens=10)),
        key(images=[("b" * 64, "image/png")]),
        key(images=[("a" * 64, "image/jpeg")]),
        key(images=[("a" * 64, "image/png")] * 2),
    ]
    assert len(set(variants)) == len(variants)
    assert key(model="models/gemini-2.5-flash") == key()  # one model, two spellings


@pytest.fixture(params=["redis", "local"])
def cache(request: pytest.FixtureRequest) -> Cache:
    if request.param == "redis":
        client = fakeredis.FakeRedis()
        return RedisAnswerCache(client, project="p", ttl_s=60, lead_ttl_s=30)
    return LocalAnswerCache(ttl_s=60, lead_ttl_s=30)


def test_the_first_asks_and_the_next_reuses(cache: Cache) -> None:
    first = cache.lookup("k", wait_s=0)
    assert first.found is None and first.lead_token is not None
    cache.put("k", ANSWER, job_id="payer")
    cache.release("k", first.lead_token)
    second = cache.lookup("k", wait_s=0)
    assert second.found is not None and second.lead_token is None
    assert (second.found.answer, second.found.job_id) == (ANSWER, "payer")


def test_a_duplicate_waits_for_the_leaders_answer(
    cache: Cache, monkeypatch: pytest.MonkeyPatch
) -> None:
    lead = cache.lookup("k", wait_s=0)
    assert lead.lead_token is not None
    # the leader answers once the duplicate has looked and found nothing, twice
    misses = threading.Semaphore(0)
    real_get = cache._get

    def counting_get(k: str) -> object:
        found = real_get(k)
        if found is None:
            misses.release()
        return found

    monkeypatch.setattr(cache, "_get", counting_get)

    def answer_later() -> None:
        for _ in range(2):
            assert misses.acquire(timeout=10)
        cache.put("k", ANSWER, job_id="payer")
        cache.release("k", lead.lead_token or "")

    thread = threading.Thread(target=answer_later)
    thread.start()
    waited = cache.lookup("k", wait_s=30)
    thread.join()
    assert waited.found is not None and waited.found.job_id == "payer"
    assert waited.lead_token is None


def test_a_leader_that_failed_hands_the_lead_on(cache: Cache) -> None:
    lead = cache.lookup("k", wait_s=0)
    assert lead.lead_token is not None
    cache.release("k", lead.lead_token)  # unreadable answer: nothing stored
    after = cache.lookup("k", wait_s=0)
    assert after.found is None and after.lead_token is not None


def test_a_duplicate_asks_itself_when_the_leader_takes_too_long(cache: Cache) -> None:
    assert cache.lookup("k", wait_s=0).lead_token is not None
    late = cache.lookup("k", wait_s=0.2)
    assert late.found is None and late.lead_token is None


def test_the_first_answer_stands_unless_one_was_asked_fresh(cache: Cache) -> None:
    cache.put("k", ANSWER, job_id="first")
    cache.put("k", ANSWER, job_id="racer")
    assert (cache.lookup("k", wait_s=0).found or pytest.fail()).job_id == "first"
    cache.put("k", ANSWER, job_id="fresh", replace=True)
    assert (cache.lookup("k", wait_s=0).found or pytest.fail()).job_id == "fresh"
    cache.forget("k")
    assert cache.lookup("k", wait_s=0).found is None


def test_an_entry_another_version_wrote_is_a_miss() -> None:
    client = fakeredis.FakeRedis()
    cache = RedisAnswerCache(client, project="p", ttl_s=60, lead_ttl_s=30)
    client.set("gvw:answer-cache:p:k", b'{"answer": {"text": 1}}')
    assert cache.lookup("k", wait_s=0).found is None


def test_entries_expire_with_the_ttl() -> None:
    client = fakeredis.FakeRedis()
    RedisAnswerCache(client, project="p", ttl_s=60, lead_ttl_s=30).put("k", ANSWER, job_id="j")
    assert 0 < client.ttl("gvw:answer-cache:p:k") <= 60
