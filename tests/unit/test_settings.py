"""The reliability settings hold together: nothing outlives the visibility timeout."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from worker.queue.app import celery_config
from worker.settings import Settings


def test_defaults_follow_the_contract() -> None:
    s = Settings(_env_file=None)
    assert s.celery_broker_url == "redis://localhost:6379/0"
    assert s.gvw_redis_url == "redis://localhost:6379/1"
    assert s.gvw_results_uri == "file://./gvw-results"
    assert s.allowed_input_prefixes == ("s3://",)
    assert s.gvw_model == "gemini-2.5-flash"
    assert s.gvw_inline_max_bytes == 20_000_000
    assert s.gvw_rate_limit_rpm == 0


def test_google_api_key_is_accepted_as_the_key(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("GEMINI_API_KEY", raising=False)
    monkeypatch.setenv("GOOGLE_API_KEY", "k-123")
    assert Settings().api_key == "k-123"
    assert "k-123" not in repr(Settings())


def test_visibility_timeout_is_set_in_all_three_places_and_outlives_everything() -> None:
    s = Settings()
    conf = celery_config(s)
    timeout = s.gvw_visibility_timeout_s
    assert conf["broker_transport_options"]["visibility_timeout"] == timeout
    assert conf["result_backend_transport_options"]["visibility_timeout"] == timeout
    assert conf["visibility_timeout"] == timeout
    assert conf["task_time_limit"] + s.gvw_retry_max_s < timeout
    assert conf["task_soft_time_limit"] < conf["task_time_limit"]


def test_delivery_settings_of_reliability_md() -> None:
    conf = celery_config(Settings())
    assert conf["task_acks_late"] is True
    assert conf["task_reject_on_worker_lost"] is True
    assert conf["task_acks_on_failure_or_timeout"] is True
    assert conf["worker_prefetch_multiplier"] == 1
    assert conf["worker_cancel_long_running_tasks_on_connection_loss"] is True
    assert conf["broker_connection_retry_on_startup"] is True
    assert conf["broker_transport_options"]["unacked_restore_throttle"] == 1


def test_a_plain_redis_broker_gets_the_transport_that_puts_back_what_it_took() -> None:
    conf = celery_config(Settings(celery_broker_url="redis://broker:6379/0"))
    assert conf["broker_transport"] == "worker.queue.broker_transport:Transport"
    # TLS and Sentinel stay with kombu's own choice by scheme: naming a class would drop it
    for url in ("rediss://broker:6380/0", "sentinel://broker:26379/0"):
        assert "broker_transport" not in celery_config(Settings(celery_broker_url=url))


def test_a_retry_cap_longer_than_the_visibility_timeout_is_refused() -> None:
    with pytest.raises(ValidationError, match="VISIBILITY_TIMEOUT"):
        Settings(
            gvw_visibility_timeout_s=300,
            gvw_hard_time_limit_s=250,
            gvw_soft_time_limit_s=200,
            gvw_retry_max_s=120,
        )


def test_an_empty_base_url_means_googles_endpoint(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GEMINI_BASE_URL", "")
    assert Settings().gemini_base_url is None
