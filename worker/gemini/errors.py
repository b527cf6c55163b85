"""Every SDK and transport error of a Gemini call becomes one of `tasks.errors`, here.

One context manager, `gemini_errors`, wraps every call of the gateway: `APIError`s by
their HTTP status and body (429 with RetryInfo or a per-day QuotaFailure, 5xx, 4xx), and
timeouts and connection errors of the transport. Errors about a request's File API URIs
get their own types, so the pipeline can recover by type, not by string:

    403 / 404 on a request with file URIs     FileUriRejected  (expired, deleted, foreign)
    400 FAILED_PRECONDITION, with file URIs   FileNotActive    (still PROCESSING)
    4xx about fetching, with URLs             UrlNotFetched    (expired, unreachable)

Messages are scrubbed of pre-signed URLs before they go anywhere.

Anything else is not Gemini's answer but a bug, and propagates as it is (the task retries
it as `internal`, then records it): no catch-all here, which is also why no Celery
exception needs special passage through this module.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import Any

import httpx2
from google.genai import errors as genai_errors

from tasks.errors import (
    FileNotActive,
    FileUriRejected,
    GvwError,
    ModelRateLimited,
    ModelRejected,
    ModelTimedOut,
    ModelUnavailable,
    QuotaExhausted,
    UrlNotFetched,
)
from worker.observability import scrub_signed_urls


@contextmanager
def gemini_errors(*, uses_files: bool = False, uses_urls: bool = False) -> Iterator[None]:
    """Translate what the SDK and its transport raise inside the block."""
    try:
        yield
    except genai_errors.APIError as exc:
        error = translate_api_error(exc.code, exc.status, exc.message, exc.details)
        if uses_urls:
            error = _about_urls(error)
        if uses_files and not isinstance(error, UrlNotFetched):
            error = _about_files(error)
        # from None: the SDK's exception text may quote the request, URLs included
        raise error from None
    except httpx2.ConnectTimeout as exc:
        # no connection at all: Gemini (or the way to it) is down, an outage to wait out
        raise ModelUnavailable(f"cannot reach Gemini: {exc.__class__.__name__}") from exc
    except (httpx2.TimeoutException, TimeoutError) as exc:
        # connected, but no answer in time: most often the request's own doing
        raise ModelTimedOut(f"Gemini request timed out: {exc.__class__.__name__}") from exc
    except (httpx2.TransportError, ConnectionError) as exc:
        raise ModelUnavailable(f"cannot reach Gemini: {exc.__class__.__name__}: {exc}") from exc


_FETCH_WORDS = ("url", "fetch", "retriev", "download")


def _about_urls(error: GvwError) -> GvwError:
    """A 4xx that says Gemini could not get a URL's content."""
    if not isinstance(error, ModelRejected):
        return error
    status = error.details.get("http_status")
    text = error.message.lower()
    if status in (400, 403, 404) and any(word in text for word in _FETCH_WORDS):
        return UrlNotFetched(error.message, **error.details)
    return error


def _about_files(error: GvwError) -> GvwError:
    """The same error, typed for what it says about the request's File API URIs."""
    if not isinstance(error, ModelRejected):
        return error
    if error.details.get("http_status") in (403, 404):
        # the API answers 403, not 404, for an expired, deleted or foreign file
        return FileUriRejected(error.message, **error.details)
    if error.details.get("status") == "FAILED_PRECONDITION":
        return FileNotActive(error.message, **error.details)
    return error


_DURATION_RE = re.compile(r"^\s*(\d+(?:\.\d+)?)s\s*$")


def translate_api_error(
    code: int | None, status: str | None, message: str | None, body: Any
) -> GvwError:
    error = _error_object(body)
    raw_details = error.get("details")
    details: list[Any] = raw_details if isinstance(raw_details, list) else []
    msg = scrub_signed_urls(message or error.get("message") or "")
    status = status or error.get("status") or ""
    summary = f"Gemini {code} {status}: {msg}".strip()
    if code == 429:
        if _is_daily_quota(details, msg):
            return QuotaExhausted(summary, http_status=code)
        return ModelRateLimited(summary, retry_after_s=retry_delay_s(details), http_status=code)
    if code is not None and (code >= 500 or code in (408,)):
        return ModelUnavailable(summary, http_status=code)
    return ModelRejected(summary, http_status=code, status=status)


def _error_object(body: Any) -> Mapping[str, Any]:
    if isinstance(body, list) and len(body) == 1:
        body = body[0]
    if isinstance(body, Mapping):
        inner = body.get("error", body)
        if isinstance(inner, Mapping):
            return inner
    return {}


def retry_delay_s(details: Sequence[Any]) -> float | None:
    """`google.rpc.RetryInfo.retryDelay` ("53s", "1.5s") in seconds, if the 429 carries one."""
    for detail in details:
        if isinstance(detail, Mapping) and str(detail.get("@type", "")).endswith("RetryInfo"):
            match = _DURATION_RE.match(str(detail.get("retryDelay", "")))
            if match:
                return float(match.group(1))
    return None


def _is_daily_quota(details: Sequence[Any], message: str) -> bool:
    """A per-day quota resets at midnight Pacific: retrying within minutes only burns calls."""
    for detail in details:
        if isinstance(detail, Mapping) and str(detail.get("@type", "")).endswith("QuotaFailure"):
            for violation in detail.get("violations") or []:
                if not isinstance(violation, Mapping):
                    continue
                quota_id = str(violation.get("quotaId", "")) + str(violation.get("quotaMetric", ""))
                if "perday" in quota_id.lower().replace("_", "").replace("-", ""):
                    return True
    return "per day" in message.lower() and not details
