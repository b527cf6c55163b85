"""Everything a job touches, as small interfaces: the pipeline's only view of the world.

`Ports` is built once per process by the composition root (`worker.runtime`), with Redis
and S3 adapters in a worker and in-memory and local ones in `gvw demo`, the in-process
benchmarks and the pipeline's fast tests. The pipeline sees each port through the
Protocol its room defines (`worker.storage.port.Stores`, `worker.gemini.port.Gemini`, the
fleet's ports in `worker/fleet/`), never through an adapter's own class.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from tasks.pricing import PriceTable
from worker.events.emitter import Events
from worker.fleet.answer_cache import AnswerCache
from worker.fleet.answer_store import AnswerStore
from worker.fleet.batch_store import Batches
from worker.fleet.budget import Budget
from worker.fleet.dead_letters import DeadLetters
from worker.fleet.deliveries import Deliveries
from worker.fleet.file_cache import FileCache
from worker.fleet.job_claims import JobClaims
from worker.fleet.job_locks import JobLocks
from worker.fleet.ratelimit import RateLimiter
from worker.fleet.refusals import LocalRefusals, Refusals
from worker.gemini.port import Gemini
from worker.pipeline.request_images import ImageSender
from worker.runs.book import RunBook
from worker.settings import Settings
from worker.storage.port import Stores


@dataclass
class Ports:
    """Everything a job touches, built once per process (see `worker.runtime`)."""

    settings: Settings
    stores: Stores
    gemini: Gemini
    locks: JobLocks
    files: FileCache
    limiter: RateLimiter
    deliveries: Deliveries
    dead_letters: DeadLetters
    answers: AnswerStore
    claims: JobClaims
    prices: PriceTable
    answer_cache: AnswerCache
    budget: Budget
    # the runs jobs are counted in (`worker.runs`)
    runs: RunBook
    # completion events: `emit(event, destinations)`, `check(notify)` (`worker.events`)
    events: Events
    # batch mode's state (None without Redis: batch mode is then refused)
    batches: Batches | None = None
    # jobs refused because their id belongs to another job (`worker.fleet.refusals`)
    refusals: Refusals = field(default_factory=LocalRefusals)
    # asks for a follower run soon (set by the Celery app; `worker.batch.follower`)
    schedule_batch_run: Callable[[], None] = field(default=lambda: None)

    def sender(self) -> ImageSender:
        return ImageSender(
            self.gemini,
            self.files,
            inline_max_bytes=self.settings.gvw_inline_max_bytes,
            active_timeout_s=self.settings.gvw_file_active_timeout_s,
        )
