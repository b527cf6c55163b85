"""SDK errors become the project's own errors, decided from real Gemini error bodies."""

from __future__ import annotations

import json
import pickle

import pytest

from tasks.errors import (
    ModelRateLimited,
    ModelRejected,
    ModelUnavailable,
    QuotaExhausted,
)
from tests.conftest import GEMINI_REAL
from worker.gemini import translate_api_error


def _body(name: str) -> dict:
    return json.loads((GEMINI_REAL / name).read_text())


def _translate(body: dict):
    err = body["error"]
    return translate_api_error(err["code"], err.get("status"), err.get("message"), body)


@pytest.mark.parametrize(
    ("fixture", "expected_type"),
    [
        pytest.param(
            "rest_error_01_404_NOT_FOUND_model_gemini-1.0-pro.json",
            ModelRejected,
            id="404-unknown-model",
        ),
        pytest.param(
            "rest_error_02_429_RESOURCE_EXHAUSTED_2024_issue-paste.json",
            ModelRateLimited,
            id="429-bare",
        ),
        pytest.param(
            "rest_error_03_400_INVALID_ARGUMENT_API_KEY_INVALID_reserialized.json",
            ModelRejected,
            id="400-bad-key",
        ),
        pytest.param(
            "rest_error_06_400_INVALID_ARGUMENT_provided-image-not-valid_reserialized.json",
            ModelRejected,
            id="400-bad-image",
        ),
        pytest.param("rest_error_10_500_INTERNAL_reserialized.json", ModelUnavailable, id="500"),
        pytest.param(
            "rest_error_11_503_UNAVAILABLE_overloaded_reserialized.json",
            ModelUnavailable,
            id="503-overloaded",
        ),
        pytest.param(
            "rest_error_13_401_UNAUTHENTICATED_vertex_reserialized.json", ModelRejected, id="401"
        ),
        pytest.param(
            "secondary/rest_error_429_RESOURCE_EXHAUSTED_Help-only_2026_decoded-from-genai-ApiError.json",
            ModelRateLimited,
            id="429-help-only",
        ),
    ],
)
def test_real_error_bodies_map_to_retry_or_permanent(fixture: str, expected_type: type) -> None:
    error = _translate(_body(fixture))
    assert type(error) is expected_type
    assert error.message.startswith("Gemini ")


def test_retry_delay_is_read_from_retry_info() -> None:
    body = _body(
        "secondary/rest_error_429_RESOURCE_EXHAUSTED_QuotaFailure-Help-RetryInfo_2025_unescaped-from-issue.json"
    )
    error = _translate(body)
    assert isinstance(error, ModelRateLimited)
    assert error.retry_after_s == 26.0


def test_429_without_retry_info_has_no_delay() -> None:
    error = _translate(_body("rest_error_02_429_RESOURCE_EXHAUSTED_2024_issue-paste.json"))
    assert isinstance(error, ModelRateLimited)
    assert error.retry_after_s is None


def test_per_day_quota_is_final_not_retried() -> None:
    body = _body(
        "secondary/rest_error_429_RESOURCE_EXHAUSTED_QuotaFailure-Help-RetryInfo_2025_unescaped-from-issue.json"
    )
    body["error"]["details"][0]["violations"][0]["quotaId"] = (
        "GenerateRequestsPerDayPerProjectPerModel-FreeTier"
    )
    error = _translate(body)
    assert isinstance(error, QuotaExhausted)
    assert not error.retryable


def test_fractional_retry_delay() -> None:
    body = {
        "error": {
            "code": 429,
            "status": "RESOURCE_EXHAUSTED",
            "message": "slow down",
            "details": [
                {"@type": "type.googleapis.com/google.rpc.RetryInfo", "retryDelay": "1.5s"}
            ],
        }
    }
    assert _translate(body).retry_after_s == 1.5


def test_translated_errors_survive_pickling_across_celery() -> None:
    error = _translate(
        _body(
            "secondary/rest_error_429_RESOURCE_EXHAUSTED_QuotaFailure-Help-RetryInfo_2025_unescaped-from-issue.json"
        )
    )
    again = pickle.loads(pickle.dumps(error))
    assert type(again) is ModelRateLimited
    assert again.retry_after_s == 26.0
    assert again.code == "quota_exhausted"


def test_no_connection_is_an_outage_but_a_slow_answer_is_the_requests_own() -> None:
    import httpx2

    from tasks.errors import ModelTimedOut
    from tasks.retry_policy import is_outage
    from worker.gemini.errors import gemini_errors

    with pytest.raises(ModelUnavailable) as down, gemini_errors():
        raise httpx2.ConnectTimeout("no route")
    assert is_outage(down.value)
    with pytest.raises(ModelTimedOut) as slow, gemini_errors():
        raise httpx2.ReadTimeout("no answer in time")
    assert not is_outage(slow.value) and slow.value.retryable


def test_a_result_file_line_is_read_whole_whatever_its_text_holds() -> None:
    import json

    from worker.gemini.gateway import _batch_line
    from worker.gemini.records import ModelAnswer

    text = "a line\u2028and a paragraph\u2029and a next line\u0085end"
    line = json.dumps(
        {
            "key": "job-1",
            "response": {
                "candidates": [{"content": {"parts": [{"text": text}]}, "finishReason": "STOP"}]
            },
        },
        ensure_ascii=False,
    )
    key, answer = _batch_line(line)
    assert key == "job-1" and isinstance(answer, ModelAnswer) and answer.text == text
    broken_key, broken = _batch_line(line[: len(line) // 2])
    assert broken_key == "job-1" and broken.code == "model_output_invalid"  # type: ignore[union-attr]
