"""One typed settings object, read from the environment once per process.

Names are those of docs/contract.md ("Configuration"); the extra `GVW_*` knobs below are
documented in the README. Time values carry their unit in the name.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import types
import typing
from dataclasses import dataclass
from functools import lru_cache
from ipaddress import ip_address
from typing import Any, Literal

from annotated_types import Ge, Gt, Le, Lt
from pydantic import (
    AliasChoices,
    Field,
    SecretStr,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic.fields import FieldInfo
from pydantic_settings import BaseSettings, SettingsConfigDict

# Completion events (worker/events/, docs/events.md): the allow-list's bounds
NOTIFY_MAX_PREFIXES = 100
NOTIFY_PREFIX_MAX_CHARS = 1024
NOTIFY_KINDS = ("https://", "http://", "sqs:", "sns:", "celery:")
# the fleet's job queue (worker.contract.names.QUEUE, which this room may not import):
# no event goes there
FLEET_QUEUE = "vision"
# an allow-list entry's options: a webhook's signing secret, and whether a host it names
# by a DNS name may resolve to a private, loopback or link-local address (internal services)
_NOTIFY_OPTIONS = frozenset({"secret", "allow_private_addresses"})


class SettingsInvalid(ValueError):
    """The environment holds a setting the worker cannot use. The message is one line
    that names the variable, what is wrong with its value, and what is allowed."""


@dataclass(frozen=True)
class NotifyRoute:
    """One allow-list entry of GVW_NOTIFY_DESTINATIONS: destinations starting with
    ``prefix`` may be named by a job's ``notify``. ``secret`` signs a webhook's events
    (a SecretStr: never shown by a repr, a log line or an error message)."""

    prefix: str
    secret: SecretStr | None = None
    allow_private_addresses: bool = False

    @property
    def is_webhook(self) -> bool:
        return self.prefix.startswith(("https://", "http://"))

    @property
    def host(self) -> str | None:
        """A webhook prefix's host (lower case, an IPv6 address without brackets)."""
        if not self.is_webhook:
            return None
        netloc = self.prefix.split("://", 1)[1].split("/", 1)[0].lower()
        if netloc.startswith("["):
            return netloc[1:].split("]", 1)[0]
        return netloc.rsplit(":", 1)[0] if netloc.count(":") == 1 else netloc


def parse_notify_routes(text: str) -> tuple[NotifyRoute, ...]:
    """GVW_NOTIFY_DESTINATIONS's JSON object, checked: ``ValueError`` says what is wrong
    without repeating a secret."""
    if not text.strip():
        return ()
    try:
        raw = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ValueError(f"not valid JSON ({exc.msg} at column {exc.colno})") from None
    if not isinstance(raw, dict):
        raise ValueError("expected a JSON object of destination prefix -> options")
    if len(raw) > NOTIFY_MAX_PREFIXES:
        raise ValueError(f"more than {NOTIFY_MAX_PREFIXES} prefixes")
    routes = []
    for prefix, options in raw.items():
        routes.append(_notify_route(prefix, options))
    return tuple(routes)


def _notify_route(prefix: str, options: Any) -> NotifyRoute:
    shown = repr(prefix[:80])
    if not isinstance(options, dict):
        raise ValueError(f"prefix {shown}: options must be a JSON object (e.g. {{}})")
    unknown = sorted(str(k)[:40] for k in options if k not in _NOTIFY_OPTIONS)
    if unknown:
        raise ValueError(
            f"prefix {shown}: unknown options {unknown}; allowed: {sorted(_NOTIFY_OPTIONS)}"
        )
    if len(prefix) > NOTIFY_PREFIX_MAX_CHARS or any(c.isspace() or ord(c) < 32 for c in prefix):
        raise ValueError(f"prefix {shown}: too long, or holds spaces or control characters")
    if not prefix.startswith(NOTIFY_KINDS):
        raise ValueError(f"prefix {shown}: must start with one of {', '.join(NOTIFY_KINDS)}")
    allow_private = options.get("allow_private_addresses", False)
    if not isinstance(allow_private, bool):
        raise ValueError(f"prefix {shown}: allow_private_addresses must be true or false")
    secret = options.get("secret")
    if not prefix.startswith(("https://", "http://")):
        if secret is not None or allow_private:
            raise ValueError(f"prefix {shown}: only a webhook prefix takes these options")
        if prefix.startswith("celery:"):
            # a celery prefix names its queue whole ("celery:callbacks/"): "celery:" or
            # "celery:v" would let a job send tasks to any queue, the fleet's own too
            queue, slash, _ = prefix.removeprefix("celery:").partition("/")
            if not queue or not slash or queue == FLEET_QUEUE:
                raise ValueError(
                    f"prefix {shown}: a celery prefix names a queue other than the fleet's "
                    f"own ({FLEET_QUEUE}) and ends it with '/' (celery:callbacks/)"
                )
        return NotifyRoute(prefix)
    # a webhook prefix names its host, ended by "/": "https://hooks.example.com" would
    # also allow "https://hooks.example.com.evil.net/", and "https://" every host
    rest = prefix.split("://", 1)[1]
    host, slash, _ = rest.partition("/")
    if not host or not slash or "@" in host:
        raise ValueError(
            f"prefix {shown}: a webhook prefix names a host and ends it with '/' "
            "(https://hooks.example.com/ or a longer path), with no user name"
        )
    if not isinstance(secret, str) or not _is_webhook_secret(secret):
        raise ValueError(
            f'prefix {shown}: a webhook prefix needs "secret": "whsec_..." (base64 '
            "after whsec_, as Standard Webhooks secrets are)"
        )
    return NotifyRoute(prefix, SecretStr(secret), allow_private)


def _is_webhook_secret(secret: str) -> bool:
    if not secret.startswith("whsec_"):
        return False
    try:
        key = base64.b64decode(secret.removeprefix("whsec_") + "==", validate=False)
    except (binascii.Error, ValueError):
        return False
    # at least 16 bytes of key (Standard Webhooks: 24 to 64)
    return len(key) >= 16


def is_ip_literal(host: str) -> bool:
    try:
        ip_address(host)
    except ValueError:
        return False
    return True


class Settings(BaseSettings):
    model_config = SettingsConfigDict(extra="ignore", case_sensitive=False)

    # --- contract names ---------------------------------------------------------------
    gemini_api_key: SecretStr | None = Field(
        default=None, validation_alias=AliasChoices("GEMINI_API_KEY", "GOOGLE_API_KEY")
    )
    gemini_base_url: str | None = None
    celery_broker_url: str = "redis://localhost:6379/0"
    # Results live in storage (result.json, error.json): workers need no Celery result
    # backend, and keep task states in none unless one is named here. (Its old default,
    # redis://localhost:6379/0, sent task states to whatever Redis listened there, or
    # failed every job outside its body where none did.)
    celery_result_backend: str | None = None
    gvw_redis_url: str = "redis://localhost:6379/1"
    gvw_results_uri: str = "file://./gvw-results"
    gvw_allowed_inputs: str = "s3://"
    gvw_model: str = "gemini-2.5-flash"
    gvw_inline_max_bytes: int = Field(default=20_000_000, ge=1)
    gvw_rate_limit_rpm: int = Field(default=0, ge=0)

    # --- project knobs ------------------------------------------------------------------
    # Where a job may write: results under GVW_RESULTS_URI are always allowed.
    gvw_allowed_outputs: str = "s3://"
    # Inputs larger than this are refused before a byte is read.
    gvw_max_input_bytes: int = Field(default=50_000_000, ge=1)
    # Decoded size cap of one image, checked from its header: a 48 MP photo passes, one
    # decoded RGB image stays under 270 MB. Any value holds, above Pillow's own 89.5 MP
    # bomb threshold too: worker.images.prepare raises Pillow's to twice this (never lowers it).
    gvw_max_image_pixels: int = Field(default=89_000_000, ge=1)
    gvw_gemini_timeout_s: float = Field(default=120.0, gt=0)
    gvw_s3_connect_timeout_s: float = Field(default=5.0, gt=0)
    gvw_s3_read_timeout_s: float = Field(default=30.0, gt=0)
    # Celery time limits per attempt, and the broker's redelivery timeout. The timeout
    # must exceed hard limit + longest retry countdown + margin (docs/reliability.md).
    gvw_soft_time_limit_s: int = Field(default=300, ge=1)
    gvw_hard_time_limit_s: int = Field(default=330, ge=2)
    gvw_visibility_timeout_s: int = Field(default=900, ge=3)
    gvw_retry_base_s: float = Field(default=2.0, gt=0)
    gvw_retry_max_s: float = Field(default=120.0, gt=0)
    gvw_max_retries: int = Field(default=8, ge=0)
    # A service the job needs being down (storage, Gemini 5xx, the fleet's Redis) is not
    # the job's fault: the job waits for it this long at most, backing off to 30 s
    # between looks, without spending its retries; then it is recorded as failed, saying
    # what it waited for.
    gvw_outage_max_wait_s: float = Field(default=3600.0, ge=0)
    # Model output that cannot be read is asked again this many times, then final.
    gvw_output_retries: int = Field(default=2, ge=0)
    # File API: cache entries end this long before Gemini deletes the file (48 h after
    # upload); the upload lock outlives any upload; an upload must turn ACTIVE in time.
    gvw_file_cache_margin_s: float = Field(default=3600.0, ge=0)
    gvw_upload_lock_ttl_s: float = Field(default=120.0, gt=0)
    gvw_file_active_timeout_s: float = Field(default=60.0, gt=0)
    # Tasks that ask for it (segment) send images scaled to fit this square, as Google's
    # guide advises (0 = send them as prepared); results still map to the original.
    gvw_fit_within_px: int = Field(default=1024, ge=0)
    # Overlays are reduced until their long side fits this (0 = full size).
    gvw_overlay_max_side_px: int = Field(default=2048, ge=0)
    # On SIGQUIT (SIGTERM remapped), running jobs get this long, then go back to the queue.
    gvw_soft_shutdown_timeout_s: float = Field(default=10.0, ge=0)
    # The per-job lock lives this long unless its holder's heartbeat renews it: a dead
    # worker's job is free to run again within it.
    gvw_job_lock_ttl_s: float = Field(default=15.0, ge=1)
    # A job delivered this many times for one attempt without finishing (its worker died
    # each time) is dead-lettered instead of run again.
    gvw_max_deliveries: int = Field(default=5, ge=1)
    # A worker waits at most this long for the fleet's request budget, then hands the
    # job back to the queue to come back when budget is free.
    gvw_rate_limit_max_wait_s: float = Field(default=5.0, ge=0)
    # The decoded pixels all of a job's images may hold together (a 24 MP photo is 24
    # million): a job past it is too_large, refused before the image that would pass it
    # is decoded. 1 gigapixel is ~1,700 of Gemini's 768 px tiles, past any model's context.
    gvw_max_job_pixels: int = Field(default=1_000_000_000, ge=1)
    # A job id belongs to the first job that used it (its fingerprint, kept in Redis this
    # long, ~150 bytes a job, and in its records for as long as they live); another job
    # under it is refused.
    gvw_job_id_ttl_s: int = Field(default=24 * 3600, ge=60)
    # An answer is paid once: identical requests (same image bytes, task, prompt, labels,
    # schema, model, options) from any job within this many seconds reuse it (0 = off).
    gvw_answer_cache_ttl_s: int = Field(default=0, ge=0)
    # Dollars the fleet may spend on Gemini per UTC day, at the price table's rates,
    # shared by every worker through Redis (0 = no budget). worker/fleet/budget.py.
    gvw_budget_usd_per_day: float = Field(default=0.0, ge=0)
    # Batch mode (options.mode "batch"; worker/batch/follower.py): a batch is submitted once
    # this many requests wait, or when the oldest has waited this long; requests above the
    # inline size go in a JSONL file; the follower looks every GVW_BATCH_POLL_S; a batch
    # that fails, expires or is cancelled sends its jobs to the next batch ("batch") or
    # to the interactive path ("interactive").
    gvw_batch_max_requests: int = Field(default=1000, ge=1, le=50_000)
    gvw_batch_max_wait_s: float = Field(default=60.0, ge=0)
    gvw_batch_inline_max_bytes: int = Field(default=19_000_000, ge=0, le=20_000_000)
    gvw_batch_poll_s: float = Field(default=30.0, gt=0)
    gvw_batch_fallback: Literal["batch", "interactive"] = "batch"
    # Runs (docs/runs.md): a run's live counts stay in Redis this long after its last
    # move (~100 bytes a job); its summary.json is rewritten at most this often (and
    # once when it finishes), whatever the number of workers.
    gvw_run_ttl_s: int = Field(default=14 * 24 * 3600, ge=3600)
    gvw_run_summary_every_s: float = Field(default=10.0, gt=0, le=3600)
    # How images reach Gemini: auto (inline, the File API above GVW_INLINE_MAX_BYTES),
    # inline (never the File API), file_api (every image uploaded, for reuse), url (an
    # s3:// JPEG Gemini can take as stored goes as a pre-signed URL Gemini fetches; the
    # bucket must be reachable from Google; everything else as auto).
    gvw_transport: Literal["auto", "inline", "file_api", "url"] = "auto"
    # a pre-signed URL is a credential for its lifetime: long enough for Gemini to fetch
    # it during the call, no longer (S3 allows 7 days at most)
    gvw_url_ttl_s: int = Field(default=600, ge=60, le=7 * 24 * 3600)
    # the first bytes the worker reads of an object sent by URL (type, size, orientation)
    gvw_url_header_bytes: int = Field(default=64 * 1024, ge=4096, le=1024 * 1024)
    # objects above this go the bytes way (Gemini's limit for a fetched file, 100 MB)
    gvw_url_max_bytes: int = Field(default=100_000_000, ge=1)
    # A JSON price table merged over the shipped one (worker/data/prices.json): the
    # operator's own prices, or models the shipped table does not know.
    gvw_prices_file: str | None = None
    # Models a job may name, comma-separated (empty: any). GVW_MODEL is always allowed.
    gvw_allowed_models: str = ""
    # Prometheus /metrics per worker process (0 = off), on this address
    gvw_metrics_port: int = Field(default=0, ge=0, le=65535)
    gvw_metrics_addr: str = "0.0.0.0"
    # prefork pool: children write their samples here, the main process serves the sum
    # (prometheus_client's own variable, read here so the settings say everything)
    prometheus_multiproc_dir: str | None = None
    # the bridge: its rules (a file path or inline JSON) and its webhook's shared secret
    gvw_bridge_rules: str | None = None
    gvw_bridge_token: SecretStr | None = None
    # Completion events (docs/events.md): the allow-list, a JSON object of destination
    # prefix -> options ({"https://hooks.example.com/gvw/": {"secret": "whsec_..."},
    # "sqs:gvw-": {}, "celery:callbacks/": {}}); a job may name only destinations it
    # allows. A SecretStr: its webhook secrets never appear in a repr, log or error.
    gvw_notify_destinations: SecretStr = SecretStr("")
    # delivery: attempts per event and destination, then the event is kept as failed
    # (`gvw events list --failed`); backoff doubles from the base to the cap, jittered
    gvw_notify_max_attempts: int = Field(default=8, ge=1, le=100)
    gvw_notify_backoff_base_s: float = Field(default=30.0, gt=0)
    gvw_notify_backoff_max_s: float = Field(default=3600.0, gt=0)
    # one delivery's whole time (connect, send, answer) to a webhook, SQS, SNS or broker
    gvw_notify_timeout_s: float = Field(default=10.0, gt=0, le=120)
    gvw_log_level: str = "INFO"
    # "text": readable lines (a terminal); "json": one JSON object a line (log pipelines)
    gvw_log_format: Literal["text", "json"] = "text"

    @field_validator("gemini_base_url", "celery_result_backend", mode="before")
    @classmethod
    def _empty_means_default(cls, value: object) -> object:
        # `GEMINI_BASE_URL=` (set but empty, as compose files do) means Google's endpoint;
        # `CELERY_RESULT_BACKEND=` means none
        return None if isinstance(value, str) and not value.strip() else value

    @field_validator("gvw_notify_destinations", mode="after")
    @classmethod
    def _check_notify_destinations(cls, value: SecretStr) -> SecretStr:
        parse_notify_routes(value.get_secret_value())  # a bad allow-list stops the process
        return value

    @model_validator(mode="after")
    def _check_timing(self) -> Settings:
        if self.gvw_soft_time_limit_s >= self.gvw_hard_time_limit_s:
            raise ValueError("GVW_SOFT_TIME_LIMIT_S must be below GVW_HARD_TIME_LIMIT_S")
        needed_s = self.gvw_hard_time_limit_s + self.gvw_retry_max_s
        if self.gvw_visibility_timeout_s <= needed_s:
            # A message whose retry countdown or run outlives the visibility timeout is
            # handed to a second worker while the first still holds it.
            raise ValueError(
                "GVW_VISIBILITY_TIMEOUT_S must exceed GVW_HARD_TIME_LIMIT_S + GVW_RETRY_MAX_S "
                f"({self.gvw_visibility_timeout_s} <= {needed_s})"
            )
        return self

    @property
    def allowed_input_prefixes(self) -> tuple[str, ...]:
        return _split_prefixes(self.gvw_allowed_inputs)

    @property
    def allowed_output_prefixes(self) -> tuple[str, ...]:
        return (*_split_prefixes(self.gvw_allowed_outputs), self.gvw_results_uri.rstrip("/") + "/")

    @property
    def allowed_models(self) -> frozenset[str]:
        named = frozenset(_split_prefixes(self.gvw_allowed_models))
        return named | {self.gvw_model} if named else frozenset()

    @property
    def notify_routes(self) -> tuple[NotifyRoute, ...]:
        """GVW_NOTIFY_DESTINATIONS's entries (checked when the settings were read)."""
        return parse_notify_routes(self.gvw_notify_destinations.get_secret_value())

    @property
    def notify_secrets(self) -> tuple[str, ...]:
        """The webhook secrets, for the log scrubber."""
        return tuple(
            r.secret.get_secret_value() for r in self.notify_routes if r.secret is not None
        )

    @property
    def api_key(self) -> str | None:
        return self.gemini_api_key.get_secret_value() if self.gemini_api_key else None

    @property
    def api_project_fingerprint(self) -> str:
        """Identifies the Gemini project (key + endpoint) without revealing the key."""
        material = f"{self.gemini_base_url or 'google'}|{self.api_key or ''}"
        return hashlib.sha256(material.encode()).hexdigest()[:16]


def _split_prefixes(value: str) -> tuple[str, ...]:
    return tuple(p.strip() for p in value.split(",") if p.strip())


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """The process's settings, from the environment; `SettingsInvalid` (one line naming
    the variable) when a value cannot be used."""
    try:
        return Settings()
    except ValidationError as exc:
        raise SettingsInvalid(describe_settings_error(exc)) from None


def env_name(field: str) -> str:
    """The environment variable a settings field is read from (its first alias)."""
    info = Settings.model_fields.get(field)
    alias = info.validation_alias if info is not None else None
    if isinstance(alias, AliasChoices) and alias.choices:
        return str(alias.choices[0])
    return field.upper()


def describe_settings_error(exc: ValidationError) -> str:
    """One line for every problem pydantic found: ``NAME='value': problem; allowed``."""
    parts = []
    for err in exc.errors(include_url=False):
        loc = err.get("loc") or ()
        field = str(loc[0]) if loc else ""
        problem = _PROBLEMS.get(err.get("type", ""), "") or str(err.get("msg", "invalid"))
        problem = problem.removeprefix("Value error, ")
        if not field:  # a rule between settings (_check_timing): its message names them
            parts.append(problem)
            continue
        name = env_name(field)
        shown = _shown_value(name, err.get("input"))
        allowed = (
            allowed_values(Settings.model_fields[field]) if field in Settings.model_fields else ""
        )
        parts.append(f"{name}={shown}: {problem}" + (f"; allowed: {allowed}" if allowed else ""))
    return "invalid setting: " + "; ".join(parts) if parts else "invalid settings"


# pydantic's error types, in a user's words (others keep pydantic's own message)
_PROBLEMS = {
    "int_parsing": "not a whole number",
    "int_from_float": "not a whole number",
    "float_parsing": "not a number",
    "bool_parsing": "not true or false",
    "literal_error": "not one of the choices",
    "greater_than": "too small",
    "greater_than_equal": "too small",
    "less_than": "too large",
    "less_than_equal": "too large",
}


def _shown_value(name: str, value: Any) -> str:
    if any(word in name for word in ("KEY", "TOKEN", "SECRET", "PASSWORD", "DESTINATIONS")):
        return "<hidden>"
    text = value if isinstance(value, str) else repr(value)
    return repr(text[:80] + ("..." if len(text) > 80 else ""))


def allowed_values(info: FieldInfo) -> str:
    """What a setting accepts, in words: ``one of auto, inline``, ``a whole number >= 1``."""
    annotation: Any = info.annotation
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        annotation = next(a for a in typing.get_args(annotation) if a is not type(None))
    if typing.get_origin(annotation) is Literal:
        return "one of " + ", ".join(str(a) for a in typing.get_args(annotation))
    kind = {int: "a whole number", float: "a number", bool: "true or false"}.get(annotation)
    if kind is None:
        return ""
    bounds = []
    for meta in info.metadata:
        for attr, sign, cls in (
            ("ge", ">=", Ge),
            ("gt", ">", Gt),
            ("le", "<=", Le),
            ("lt", "<", Lt),
        ):
            if isinstance(meta, cls):
                bounds.append(
                    f"{sign} {getattr(meta, attr):g}"
                    if annotation is float
                    else f"{sign} {getattr(meta, attr)}"
                )
    return kind + (" " + " and ".join(bounds) if bounds else "")
