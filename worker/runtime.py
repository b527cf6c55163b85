"""The composition root: builds each process's clients once, in one place.

Celery forks pool children after the parent imported us, and sockets must not cross a
fork, so clients are built in `worker_process_init` (prefork children) or `worker_init`
(thread and solo pools), never at import time.
"""

from __future__ import annotations

import importlib
import logging
import threading
import time
from collections.abc import Callable

from PIL import Image

from tasks import registry
from worker.events.emitter import EventHub
from worker.events.outbox import LocalOutbox, Outbox, RedisOutbox
from worker.fleet.answer_cache import AnswerCache, LocalAnswerCache, NoAnswerCache, RedisAnswerCache
from worker.fleet.answer_store import AnswerStore, LocalAnswerStore, RedisAnswerStore
from worker.fleet.batch_store import Batches, BatchStore, LocalBatchStore
from worker.fleet.budget import Budget, LocalBudget, NoBudget, RedisBudget
from worker.fleet.connection import fleet_client
from worker.fleet.dead_letters import DeadLetters, LocalDeadLetters, RedisDeadLetters
from worker.fleet.deliveries import Deliveries, LocalDeliveries, RedisDeliveries
from worker.fleet.file_cache import FileCache, LocalFileCache, RedisFileCache
from worker.fleet.job_claims import JobClaims, LocalJobClaims, RedisJobClaims
from worker.fleet.job_locks import JobLocks, LocalJobLocks, RedisJobLocks
from worker.fleet.ratelimit import NoRateLimit, RateLimiter, RedisRateLimiter
from worker.fleet.refusals import LocalRefusals, RedisRefusals, Refusals
from worker.gemini import GeminiGateway
from worker.pipeline.ports import Ports
from worker.prices import load_prices
from worker.runs.book import RunBook
from worker.runs.ledger import LocalRunLedger, RedisRunLedger, RunLedger
from worker.settings import Settings, get_settings
from worker.storage import S3_SCHEME, StoreRouter

log = logging.getLogger(__name__)

_ports: Ports | None = None
_installed = False  # ports given by set_ports() win over the environment's
_lock = threading.Lock()


def build_ports(settings: Settings, *, local: bool = False) -> Ports:
    """Ports for this process. `local=True` keeps locks, caches and counters in memory, for
    a single process with no Redis (`gvw demo`, in-process benchmarks)."""
    locks: JobLocks
    files: FileCache
    limiter: RateLimiter
    deliveries: Deliveries
    dead_letters: DeadLetters
    answers: AnswerStore
    claims: JobClaims
    if local:
        locks = LocalJobLocks()
        files = LocalFileCache(
            margin_s=settings.gvw_file_cache_margin_s, lock_ttl_s=settings.gvw_upload_lock_ttl_s
        )
        limiter = NoRateLimit()
        deliveries = LocalDeliveries()
        dead_letters = LocalDeadLetters()
        answers = LocalAnswerStore()
        claims = LocalJobClaims(ttl_s=settings.gvw_job_id_ttl_s)
        refusals: Refusals = LocalRefusals()
        budget: Budget = LocalBudget(budget_usd=settings.gvw_budget_usd_per_day)
        batches: Batches = LocalBatchStore()
        answer_cache: AnswerCache = LocalAnswerCache(
            ttl_s=settings.gvw_answer_cache_ttl_s, lead_ttl_s=settings.gvw_hard_time_limit_s
        )
        ledger: RunLedger = LocalRunLedger()
        outbox: Outbox = LocalOutbox()
    else:
        client = fleet_client(
            settings.gvw_redis_url,
            socket_timeout=10,
            socket_connect_timeout=5,
            health_check_interval=30,
            retry_on_timeout=True,
        )
        locks = RedisJobLocks(client, ttl_s=settings.gvw_job_lock_ttl_s)
        files = RedisFileCache(
            client,
            project=settings.api_project_fingerprint,
            margin_s=settings.gvw_file_cache_margin_s,
            lock_ttl_s=settings.gvw_upload_lock_ttl_s,
        )
        limiter = RedisRateLimiter(
            client,
            project=settings.api_project_fingerprint,
            requests_per_minute=settings.gvw_rate_limit_rpm,
        )
        deliveries = RedisDeliveries(client)
        dead_letters = RedisDeadLetters(client)
        answers = RedisAnswerStore(client)
        claims = RedisJobClaims(client, ttl_s=settings.gvw_job_id_ttl_s)
        refusals = RedisRefusals(client)
        batches = BatchStore(client)
        budget = RedisBudget(
            client,
            project=settings.api_project_fingerprint,
            budget_usd=settings.gvw_budget_usd_per_day,
        )
        answer_cache = RedisAnswerCache(
            client,
            project=settings.api_project_fingerprint,
            ttl_s=settings.gvw_answer_cache_ttl_s,
            # past the task's hard limit: a live leader always holds it to the end
            lead_ttl_s=settings.gvw_hard_time_limit_s,
        )
        ledger = RedisRunLedger(client, ttl_s=settings.gvw_run_ttl_s)
        outbox = RedisOutbox(client)
    if settings.gvw_answer_cache_ttl_s == 0:
        answer_cache = NoAnswerCache()
    if settings.gvw_budget_usd_per_day == 0:
        budget = NoBudget()
    stores = StoreRouter(
        connect_timeout_s=settings.gvw_s3_connect_timeout_s,
        read_timeout_s=settings.gvw_s3_read_timeout_s,
    )
    return Ports(
        settings=settings,
        stores=stores,
        gemini=GeminiGateway(
            api_key=settings.api_key,
            base_url=settings.gemini_base_url,
            timeout_s=settings.gvw_gemini_timeout_s,
        ),
        locks=locks,
        files=files,
        limiter=limiter,
        deliveries=deliveries,
        dead_letters=dead_letters,
        answers=answers,
        claims=claims,
        prices=load_prices(settings.gvw_prices_file),
        answer_cache=answer_cache,
        budget=budget,
        runs=RunBook(ledger, stores, summary_every_s=settings.gvw_run_summary_every_s),
        events=EventHub(outbox, settings),
        batches=batches,
        refusals=refusals,
    )


def init_process(*, warm: bool = False) -> None:
    """Build (or rebuild, after a fork) this process's ports; with ``warm``, also do the
    first job's one-off work now (`warm_up`)."""
    global _ports
    with _lock:
        if not _installed:
            _ports = build_ports(get_settings())
        ports = _ports
    if warm and ports is not None:
        warm_up(ports)


def warm_up(ports: Ports) -> float:
    """Do now, once per worker process, the one-off work a first job would otherwise pay
    for (about a second on a busy 2-core machine against ~40 ms for a later job): the S3
    client, the task modules, Pillow's plug-ins, the SDK's types. No network
    call. Best effort: a failure is logged and left to the first job. Returns seconds."""
    started = time.perf_counter()
    settings = ports.settings
    steps: list[tuple[str, Callable[[], object]]] = [
        ("task modules", registry.task_names),
        ("image decoders", Image.init),
        ("mask decoder", lambda: importlib.import_module("tasks.masks")),
        ("gemini types", ports.gemini.warm_up),
    ]
    uses_s3 = (*settings.allowed_input_prefixes, *settings.allowed_output_prefixes)
    if any(prefix.startswith(S3_SCHEME) for prefix in uses_s3):
        steps.insert(0, ("s3 client", ports.stores.connect_s3))
    for what, step in steps:
        try:
            step()
        except Exception:
            log.warning("warm-up step failed: %s", what, exc_info=True)
    seconds = time.perf_counter() - started
    log.info("worker process warmed up", extra={"seconds": round(seconds, 3)})
    return seconds


def set_ports(ports: Ports) -> None:
    """Install ports built elsewhere (`gvw demo`, in-process tests)."""
    global _ports, _installed
    with _lock:
        _ports = ports
        _installed = True


def settings() -> Settings:
    """This process's settings: those of installed ports (`gvw demo`), else the
    environment's."""
    with _lock:
        if _installed and _ports is not None:
            return _ports.settings
    return get_settings()


def get_ports() -> Ports:
    global _ports
    if _ports is None:
        with _lock:
            if _ports is None:
                _ports = build_ports(get_settings())
    return _ports
