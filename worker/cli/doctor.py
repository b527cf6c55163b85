"""`gvw doctor`: everything a deployment needs, checked with the worker's own settings.

One line per check, ``ok``, ``warn`` or ``FAIL``, each failure saying what to fix; the
exit status is non-zero when any check fails. Nothing is sent to Gemini but one
``models.get`` (no generation, no cost); the only write is a probe object in the results
location, deleted at once. Checks, in order:

    broker      CELERY_BROKER_URL answers
    redis       GVW_REDIS_URL answers; maxmemory-policy noeviction (else jobs and locks
                can be evicted: FAIL); persistence on (else a restart loses queued jobs:
                warn); CONFIG may be disabled on managed Redis (warn: check it there)
    backend     CELERY_RESULT_BACKEND, when one is named, answers (workers write task
                states there); none is needed: results live in storage
    clock       this host's clock against Redis's (TIME) and S3's (Date): S3 refuses
                requests from a clock 15 minutes off, locks and rate limits need them close
    results     GVW_RESULTS_URI writable: a probe object written and deleted
    inputs      each GVW_ALLOWED_INPUTS prefix listable (one page)
    gemini      the endpoint in use (Google or GEMINI_BASE_URL), the key accepted and
                GVW_MODEL known: one models.get
    notify      the destination prefixes GVW_NOTIFY_DESTINATIONS allows (never their
                secrets); an http:// prefix is a warning (events and signatures in clear)
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from email.utils import parsedate_to_datetime
from typing import Any, Literal

from kombu.utils.url import maybe_sanitize_url

from tasks.errors import GvwError
from worker.settings import Settings
from worker.storage import StoreRouter, join_uri
from worker.storage.uris import parse_prefix

Level = Literal["ok", "warn", "FAIL"]
# seconds a clock may be off before it is reported (S3 itself refuses 900 s)
CLOCK_SKEW_MAX_S = 30.0
_TIMEOUT_S = 5.0


@dataclass(frozen=True)
class Check:
    level: Level
    name: str
    detail: str

    def line(self) -> str:
        return f"{self.level:<4}  {self.name:<8} {self.detail}"


def run_checks(settings: Settings, *, stores: StoreRouter | None = None) -> list[Check]:
    stores = stores or StoreRouter(
        connect_timeout_s=min(settings.gvw_s3_connect_timeout_s, _TIMEOUT_S),
        read_timeout_s=min(settings.gvw_s3_read_timeout_s, 2 * _TIMEOUT_S),
        max_attempts=1,
    )
    steps: list[tuple[str, Callable[[Settings, StoreRouter], Iterator[Check]]]] = [
        ("broker", _broker),
        ("redis", _redis),
        ("backend", _backend),
        ("results", _results),
        ("inputs", _inputs),
        ("gemini", _gemini),
        ("notify", _notify),
    ]
    checks: list[Check] = []
    for name, step in steps:
        try:
            checks.extend(step(settings, stores))
        except Exception as exc:  # one FAIL line with the reason, never a traceback
            checks.append(Check("FAIL", name, _reason(exc)))
    return checks


def _broker(settings: Settings, stores: StoreRouter) -> Iterator[Check]:
    from kombu import Connection

    url = settings.celery_broker_url
    shown = maybe_sanitize_url(url)
    started = time.monotonic()
    try:
        with Connection(url, connect_timeout=_TIMEOUT_S) as connection:
            connection.ensure_connection(max_retries=1, timeout=_TIMEOUT_S)
    except Exception as exc:
        yield Check(
            "FAIL",
            "broker",
            f"cannot reach {shown} ({_reason(exc)}): start it, or fix CELERY_BROKER_URL",
        )
        return
    yield Check("ok", "broker", f"{shown} answers ({_ms(started)} ms)")


def _redis(settings: Settings, stores: StoreRouter) -> Iterator[Check]:
    import redis

    client, ping = _ping(settings.gvw_redis_url, "redis", "start it, or fix GVW_REDIS_URL")
    yield ping
    if ping.level == "FAIL":
        return
    try:
        policy = _config(client, "maxmemory-policy")
        appendonly = _config(client, "appendonly")
        save = _config(client, "save")
    except redis.RedisError:
        yield Check(
            "warn",
            "redis",
            "CONFIG is not allowed here: make sure maxmemory-policy is noeviction and "
            "persistence (appendonly yes) is on, with your Redis provider",
        )
    else:
        if policy != "noeviction":
            yield Check(
                "FAIL",
                "redis",
                f"maxmemory-policy is {policy}: set noeviction (an evicting Redis loses "
                "queued jobs, locks and delivery counts)",
            )
        else:
            yield Check("ok", "redis", "maxmemory-policy noeviction")
        if appendonly != "yes" and not save:
            yield Check(
                "warn",
                "redis",
                "no persistence (appendonly no, no save points): a restart loses queued "
                "jobs; set appendonly yes",
            )
        else:
            yield Check("ok", "redis", f"persistence on (appendonly {appendonly})")
    seconds, _micros = client.time()
    yield _clock_check("clock", "Redis", float(seconds) + _micros / 1e6)


def _backend(settings: Settings, stores: StoreRouter) -> Iterator[Check]:
    url = settings.celery_result_backend
    if url is None:
        yield Check(
            "ok",
            "backend",
            "none (CELERY_RESULT_BACKEND unset): results live in GVW_RESULTS_URI",
        )
        return
    shown = maybe_sanitize_url(url)
    if not url.startswith(("redis://", "rediss://")):
        yield Check("warn", "backend", f"{shown} not checked (doctor checks redis:// backends)")
        return
    _, ping = _ping(
        url,
        "backend",
        "every job's task state would wait on it; start it, fix CELERY_RESULT_BACKEND, or "
        "unset it (results live in storage)",
    )
    yield ping


def _ping(url: str, name: str, fix: str) -> tuple[Any, Check]:
    """A Redis client for ``url`` and the check line of one PING: its time, or why not."""
    import redis

    client = redis.Redis.from_url(url, socket_connect_timeout=_TIMEOUT_S, socket_timeout=_TIMEOUT_S)
    shown = maybe_sanitize_url(url)
    started = time.monotonic()
    try:
        client.ping()
    except redis.RedisError as exc:
        return client, Check("FAIL", name, f"cannot reach {shown} ({_reason(exc)}): {fix}")
    return client, Check("ok", name, f"{shown} answers ({_ms(started)} ms)")


def _results(settings: Settings, stores: StoreRouter) -> Iterator[Check]:
    folder = settings.gvw_results_uri
    probe = join_uri(folder, ".gvw-doctor", f"probe-{uuid.uuid4().hex}")
    started = time.monotonic()
    try:
        stores.put_bytes(probe, b"gvw doctor probe\n", content_type="text/plain")
    except GvwError as exc:
        yield Check(
            "FAIL",
            "results",
            f"cannot write to {folder} ({exc.message}): create it, grant the worker write "
            "access, or fix GVW_RESULTS_URI",
        )
        return
    try:
        stores.delete(probe)
    except GvwError as exc:
        yield Check(
            "warn", "results", f"wrote a probe to {folder} but could not delete it ({exc.message})"
        )
        return
    yield Check("ok", "results", f"{folder} is writable ({_ms(started)} ms)")
    if folder.startswith("s3://"):
        skew = _s3_clock(stores, folder)
        if skew is not None:
            yield _clock_check("clock", "S3", skew)


def _inputs(settings: Settings, stores: StoreRouter) -> Iterator[Check]:
    for prefix in settings.allowed_input_prefixes:
        parsed = parse_prefix(prefix)
        if parsed.scheme == "s3" and not parsed.bucket:
            yield Check(
                "warn",
                "inputs",
                "GVW_ALLOWED_INPUTS allows every bucket (s3://): list the buckets or "
                "prefixes jobs may read",
            )
            continue
        if parsed.scheme == "file" and not parsed.path:
            yield Check("warn", "inputs", "GVW_ALLOWED_INPUTS allows every file (file://)")
            continue
        listing = prefix if prefix.endswith("/") or parsed.scheme == "file" else prefix + "/"
        try:
            first = next(iter(stores.list_objects(listing)), None)
        except GvwError as exc:
            yield Check(
                "FAIL",
                "inputs",
                f"cannot list {prefix} ({exc.message}): grant the worker read and list "
                "access, or fix GVW_ALLOWED_INPUTS",
            )
            continue
        state = "holds objects" if first is not None else "is empty (listable)"
        yield Check("ok", "inputs", f"{prefix} {state}")


def _gemini(settings: Settings, stores: StoreRouter) -> Iterator[Check]:
    from google import genai
    from google.genai import errors, types

    endpoint = settings.gemini_base_url or "Google's Gemini API (generativelanguage.googleapis.com)"
    yield Check("ok", "gemini", f"endpoint: {endpoint}")
    if settings.api_key is None and settings.gemini_base_url is None:
        yield Check("FAIL", "gemini", "no API key: set GEMINI_API_KEY (or GOOGLE_API_KEY)")
        return
    client = genai.Client(
        api_key=settings.api_key or "no-key",
        http_options=types.HttpOptions(
            base_url=settings.gemini_base_url, timeout=int(_TIMEOUT_S * 2000)
        ),
    )
    model = settings.gvw_model
    started = time.monotonic()
    try:
        found = client.models.get(model=model)
    except errors.APIError as exc:
        status = f"{exc.code} {exc.status or ''}".strip()
        if exc.code in (400, 401, 403) and "key" in (exc.message or "").lower():
            fix = "the API key was refused: check GEMINI_API_KEY"
        elif exc.code == 404:
            fix = f"model {model!r} is unknown here: fix GVW_MODEL"
        else:
            fix = "see the message; `gvw doctor` again once it is fixed"
        yield Check("FAIL", "gemini", f"models.get({model}) answered {status}: {fix}")
        return
    limit = f", input limit {found.input_token_limit:,} tokens" if found.input_token_limit else ""
    key = (
        "key accepted"
        if settings.api_key is not None
        else "no API key set (the endpoint answered without one)"
    )
    yield Check("ok", "gemini", f"{key}, model {model} known{limit} ({_ms(started)} ms)")


def _notify(settings: Settings, stores: StoreRouter) -> Iterator[Check]:
    from worker.events.destinations import shown

    routes = settings.notify_routes
    if not routes:
        yield Check("ok", "notify", "no destinations allowed: jobs naming notify are refused")
        return
    listed = ", ".join(shown(route.prefix) for route in routes[:10])
    more = f" and {len(routes) - 10} more" if len(routes) > 10 else ""
    yield Check("ok", "notify", f"{len(routes)} destination prefixes allowed: {listed}{more}")
    for route in routes:
        if route.prefix.startswith("http://"):
            yield Check("warn", "notify", f"{shown(route.prefix)}: events go unencrypted (http://)")


def _config(client: object, name: str) -> str:
    value = client.config_get(name).get(name, "")  # type: ignore[attr-defined]
    return value.decode() if isinstance(value, bytes) else str(value)


def _s3_clock(stores: StoreRouter, folder: str) -> float | None:
    """S3's clock (its Date header on a listing of the results folder), or None."""
    from worker.storage import S3Store, parse_s3_uri

    store = stores.for_uri(folder)
    if not isinstance(store, S3Store):
        return None
    bucket, _ = parse_s3_uri(folder, require_key=False)
    answer = store._client.list_objects_v2(Bucket=bucket, MaxKeys=1)
    date = answer.get("ResponseMetadata", {}).get("HTTPHeaders", {}).get("date")
    return parsedate_to_datetime(date).timestamp() if date else None


def _clock_check(name: str, other: str, other_epoch_s: float) -> Check:
    skew_s = time.time() - other_epoch_s
    if abs(skew_s) > CLOCK_SKEW_MAX_S:
        return Check(
            "FAIL",
            name,
            f"this host's clock is {skew_s:+.0f} s off {other}'s: run NTP (chrony, "
            "systemd-timesyncd) on it",
        )
    return Check("ok", name, f"within {abs(skew_s):.1f} s of {other}'s")


def _ms(started: float) -> int:
    return round((time.monotonic() - started) * 1000)


def _reason(exc: BaseException) -> str:
    text = " ".join(str(exc).split()) or type(exc).__name__
    return text[:300]
