"""Metrics (Prometheus) and logs (readable lines, or JSON lines) for a worker.

Metrics are served per worker process on `GVW_METRICS_PORT` (0 = off). With the default
thread pool a worker is one process and one endpoint. With the prefork pool, set
`PROMETHEUS_MULTIPROC_DIR` to an empty writable folder: children then write their
samples there and the main process's endpoint aggregates them.

Logs are readable text lines by default and JSON lines with ``GVW_LOG_FORMAT=json`` (the
compose file, the Kubernetes manifests and the image ask for it), with `job_id` (and other
context) as fields either way. The API key is scrubbed from every line, and nothing logs
image bytes (only sizes and hashes).
"""

from __future__ import annotations

import json
import logging
import re
import sys
import time
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Histogram, start_http_server

JOBS = Counter("gvw_jobs_total", "Jobs finished, by task and outcome", ["task", "outcome"])
RETRIES = Counter("gvw_retries_total", "Attempts sent back to the queue, by reason", ["reason"])
STAGE_SECONDS = Histogram(
    "gvw_stage_seconds",
    "Worker time per pipeline stage",
    ["stage"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120),
)
MODEL_CALLS = Counter(
    "gvw_model_calls_total", "Calls to Gemini generateContent", ["model", "outcome"]
)
TOKENS = Counter("gvw_tokens_total", "Tokens reported by Gemini usage_metadata", ["kind"])
COST_USD = Counter("gvw_cost_usd_total", "Spent on Gemini at the price table's rates", ["model"])
FILE_EVENTS = Counter(
    "gvw_file_api_events_total", "File API uploads, cache hits, re-uploads and waits", ["event"]
)
ANSWER_CACHE = Counter(
    "gvw_answer_cache_total", "Answer cache look-ups and stores (hit, miss, stored)", ["event"]
)
URL_FALLBACKS = Counter(
    "gvw_url_fallbacks_total",
    "Images of GVW_TRANSPORT=url deployments sent as bytes instead, by reason",
    ["reason"],
)
DEAD_LETTERS = Counter("gvw_dead_letters_total", "Jobs that ended in error.json", ["code"])
EVENTS = Counter(
    "gvw_events_total",
    "Completion events emitted, by outcome (added, duplicate, refused)",
    ["outcome"],
)
EVENT_DELIVERIES = Counter(
    "gvw_event_deliveries_total", "Event delivery attempts, by outcome", ["outcome"]
)

_server_started = False


def start_metrics_server(port: int, *, addr: str, multiproc_dir: str | None) -> None:
    """Serve /metrics on `addr`:`port` (once per process); port 0 disables it. With
    `multiproc_dir` (prefork), the samples of every child written there are summed."""
    global _server_started
    if port <= 0 or _server_started:
        return
    if multiproc_dir:
        from prometheus_client import multiprocess

        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry, path=multiproc_dir)
        start_http_server(port, addr=addr, registry=registry)
    else:
        start_http_server(port, addr=addr)
    _server_started = True


class StageTimer:
    """Wall time per stage, for logs and benchmarks/overhead.py."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = {}

    def stage(self, name: str) -> _Stage:
        return _Stage(self, name)


class _Stage:
    def __init__(self, timer: StageTimer, name: str) -> None:
        self._timer, self._name, self._start = timer, name, 0.0

    def __enter__(self) -> None:
        self._start = time.perf_counter()

    def __exit__(self, *exc: object) -> None:
        elapsed = time.perf_counter() - self._start
        self._timer.seconds[self._name] = self._timer.seconds.get(self._name, 0.0) + elapsed
        STAGE_SECONDS.labels(self._name).observe(elapsed)


# --- logs ------------------------------------------------------------------------------------

# LogRecord attributes that are not context a caller passed with `extra=`
_STANDARD = frozenset(vars(logging.LogRecord("", 0, "", 0, "", (), None))) | {"message", "asctime"}
_MAX_FIELD_CHARS = 2000


# A pre-signed URL (S3 SigV4 or SigV2, GCS, Azure SAS) is a credential: never in a log
# line or an error message, whoever wrote it (our code, botocore, the SDK, Gemini).
_SIGNED_URL_RE = re.compile(
    r"https?://[^\s\"'<>]*?[?&](?:X-Amz-|X-Goog-|AWSAccessKeyId=|Signature=|sig=)[^\s\"'<>]*",
    re.IGNORECASE,
)
SIGNED_URL_MARK = "<pre-signed URL>"


def scrub_signed_urls(text: str) -> str:
    return _SIGNED_URL_RE.sub(SIGNED_URL_MARK, text) if "://" in text else text


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time, level, logger, message, and every `extra` field."""

    def __init__(self, *, secrets: tuple[str, ...] = ()) -> None:
        super().__init__()
        self._secrets = tuple(s for s in secrets if s)

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "time": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
            + f".{int(record.msecs):03d}Z",
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        for key, value in record.__dict__.items():
            if key not in _STANDARD and not key.startswith("_"):
                entry[key] = _safe(value)
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        line = scrub_signed_urls(json.dumps(entry, ensure_ascii=False, default=str))
        for secret in self._secrets:
            line = line.replace(secret, "***")
        return line


def _safe(value: Any) -> Any:
    if isinstance(value, bytes | bytearray):
        return f"<{len(value)} bytes>"  # never image bytes in a log
    if isinstance(value, str) and len(value) > _MAX_FIELD_CHARS:
        return value[:_MAX_FIELD_CHARS] + "…"
    return value


class TextFormatter(logging.Formatter):
    """One readable line: time, level, logger, message, then the `extra` fields as
    key=value (the job id first). For people at a terminal; JSON lines are for machines."""

    def __init__(self, *, secrets: tuple[str, ...] = ()) -> None:
        super().__init__()
        self._secrets = tuple(s for s in secrets if s)

    def format(self, record: logging.LogRecord) -> str:
        when = time.strftime("%H:%M:%S", time.localtime(record.created))
        fields = {
            key: _safe(value)
            for key, value in record.__dict__.items()
            if key not in _STANDARD and not key.startswith("_") and key != "data"
        }
        context = " ".join(
            f"{key}={value}"
            for key, value in sorted(fields.items(), key=lambda kv: kv[0] != "job_id")
        )
        line = f"{when} {record.levelname:<7} {record.name}: {record.getMessage()}"
        if context:
            line += f"  [{context}]"
        if record.exc_info:
            line += "\n" + self.formatException(record.exc_info)
        line = scrub_signed_urls(line)
        for secret in self._secrets:
            line = line.replace(secret, "***")
        return line


LOG_FORMATS = ("text", "json")
_destination: str | None = None


def send_logs_to(path: str | None) -> None:
    """Write this process's logs to ``path`` (appended) instead of stderr, from the next
    `configure_logging` on: the demo and the benchmarks keep their terminal for progress
    and results, and print where the logs went."""
    global _destination
    _destination = path


# the error classes of a service being down (tasks.errors.DependencyUnavailable), as
# Celery's retry line names them
_OUTAGE_ERRORS = ("FleetUnavailable(", "StorageUnavailable(", "ModelUnavailable(")


class OutageWaitFilter(logging.Filter):
    """Drops Celery's per-job lines of an outage, which `worker.queue.outage_log` and
    `worker.queue.broker_transport` say in a few lines for all jobs (and gvw_retries_total
    counts): "Task ... retry: Retry in Ns: FleetUnavailable(...)" (each waiting job, each
    look, for the whole outage), "Task ... reject requeue=True: Error 111 ..." (a job whose
    wait could not be sent while the broker was away: it goes back on the queue) and
    "Task ... cannot be acknowledged after a connection loss ..." (each job in flight when
    the broker went away). Celery's "consumer: Cannot connect to ...: Trying again in N
    seconds" is said once an outage: its repeats, every few seconds while the broker stays
    away, are dropped until the consumer is "Connected to" it again. Two lines that say
    nothing an operator acts on go too: kombu's "Restoring N unacknowledged message(s)"
    as the broker goes away (`worker.queue.broker_transport` says which jobs go back, and
    when; at a shutdown the line stays) and Celery's
    "Skipping prefetch count reduction after connection restart" (per-consumer QoS)."""

    def __init__(self) -> None:
        super().__init__()
        self._broker_away_said = False
        self._broker_away = False

    def filter(self, record: logging.LogRecord) -> bool:
        if record.name == "celery.app.trace":
            text = record.getMessage()
            if " retry: " in text:
                return not any(name in text for name in _OUTAGE_ERRORS)
            return " reject requeue=True: " not in text
        if record.name == "celery.worker.consumer.consumer":
            text = record.getMessage()
            if text.startswith("consumer: Connection to broker lost"):
                self._broker_away = True
            if text.startswith("consumer: Cannot connect to "):
                repeat, self._broker_away_said = self._broker_away_said, True
                return not repeat
            return not (
                "cannot be acknowledged after a connection loss" in text
                or text.startswith("Skipping prefetch count reduction")
            )
        if record.name == "kombu.transport.virtual.base":
            return not (self._broker_away and record.getMessage().startswith("Restoring "))
        if record.name == "celery.worker.consumer.connection":
            if record.getMessage().startswith("Connected to "):
                # the next outage is said again
                self._broker_away_said = self._broker_away = False
            return True
        if record.name == "py.warnings":
            # Celery's notice, on every broker outage, that cancelling running jobs will be
            # its default: a thread pool opts out on purpose (worker.queue.app._init_worker). A
            # log filter, not a warnings filter: those are process-global state that a
            # thread's catch_warnings (the image decoder's) swaps out while it runs.
            return "In Celery 5.1 we introduced" not in record.getMessage()
        return True


def configure_logging(level: str, *, fmt: str = "text", secrets: tuple[str, ...] = ()) -> None:
    """Root logging for this process: ``fmt`` "text" (readable lines) or "json" (one JSON
    object a line, for log pipelines), at ``level``, on stderr or where `send_logs_to`
    said. The API key (``secrets``) is scrubbed from every line either way."""
    if fmt not in LOG_FORMATS:
        raise ValueError(f"log format {fmt!r}: use one of {LOG_FORMATS}")
    handler: logging.Handler = (
        logging.FileHandler(_destination, encoding="utf-8")
        if _destination
        else logging.StreamHandler(sys.stderr)
    )
    formatter = JsonFormatter(secrets=secrets) if fmt == "json" else TextFormatter(secrets=secrets)
    handler.setFormatter(formatter)
    handler.addFilter(OutageWaitFilter())
    root = logging.getLogger()
    for old in root.handlers:
        if old is not handler:
            old.close()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    # one line per HTTP request to Gemini is noise at INFO; keep it for DEBUG
    logging.getLogger("httpx2").setLevel(logging.WARNING)
    logging.getLogger("httpx").setLevel(logging.WARNING)
    logging.getLogger("google_genai").setLevel(logging.WARNING)
    # "Found credentials in environment variables." and "Found endpoint for s3 via: ..."
    # on every S3 client a process builds (each pool process, each replaced one): noise
    logging.getLogger("botocore").setLevel(logging.WARNING)
