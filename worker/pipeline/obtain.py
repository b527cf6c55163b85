"""Park or obtain: the job's answer, or its request left for a Gemini batch.

The answer comes from one of three places, cheapest first: the one this job already
paid for (a redelivery, or a batch's answer), an identical request's (the answer
cache), or the model. A model's answer is stored before it is read, so no retry pays
twice; it is then read by the task's parser, and bounded. A job in batch mode with no
answer yet parks its request in the batch store instead (`park`): the follower asks,
and sends the job back to be published.

The answer cache's single flight is held by `cache_lookup` for exactly as long as this
job is the one asking, and released in one place.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, replace

from tasks import pricing
from tasks.base import TaskOutput
from tasks.errors import (
    FileNotActive,
    FileUriRejected,
    GvwError,
    ModelOutputInvalid,
    ModelRateLimited,
    ModelRejected,
    UrlNotFetched,
)
from worker.contract.records import bounded_output
from worker.fleet.answer_cache import CachedAnswer, Lookup
from worker.fleet.budget import Reservation
from worker.gemini import ModelAnswer
from worker.gemini.records import TokenUsage
from worker.observability import (
    ANSWER_CACHE,
    COST_USD,
    MODEL_CALLS,
    TOKENS,
    URL_FALLBACKS,
    StageTimer,
)
from worker.pipeline.acquire import Acquired, PaidAnswer
from worker.pipeline.plan import JobPlan, metric_model
from worker.pipeline.ports import Ports
from worker.pipeline.request_images import RequestImages, SentImage

log = logging.getLogger(__name__)

# images[].transport of a job whose answer came from the answer cache: nothing was sent
REUSED_TRANSPORT = "none"


@dataclass(frozen=True)
class Obtained:
    """The job's answer, how each image went, and what the task read from it."""

    answer: ModelAnswer
    transports: list[str]
    parsed: TaskOutput  # bounded (`worker.contract.records.bounded_output`)
    reused: CachedAnswer | None  # the answer cache's entry, when it answered


@contextmanager
def cache_lookup(
    plan: JobPlan, ports: Ports, acquired: Acquired, paid: PaidAnswer | None
) -> Iterator[Lookup]:
    """The answer cache's entry for this request, or its lead: this job asks, and every
    duplicate waits for it until the block ends (stored, parked or failed)."""
    key = acquired.cache_key
    lookup = Lookup()
    if paid is None and key is not None and plan.looks_up:
        # a duplicate being asked right now elsewhere is waited for, at most as long as
        # one model call may take
        lookup = ports.answer_cache.lookup(key, wait_s=ports.settings.gvw_gemini_timeout_s)
        ANSWER_CACHE.labels("hit" if lookup.found else "miss").inc()
    try:
        yield lookup
    finally:
        if key is not None and lookup.lead_token is not None:
            ports.answer_cache.release(key, lookup.lead_token)


def park(plan: JobPlan, ports: Ports, acquired: Acquired, timer: StageTimer) -> None:
    """Leave the job's request (its images by File API URIs that outlive the batch) for
    the follower to send in a Gemini batch."""
    assert acquired.images is not None and ports.batches is not None
    estimate = estimate_usd(plan, ports, acquired.image_tokens, batch=True)
    if plan.capped and plan.job.run is not None:
        # at the batch price, settled when the batch's answer is published
        ports.runs.reserve(plan.job.run, plan.job_id, estimate)
    with timer.stage("ask"):  # uploads: a batch request names its images
        sent = acquired.images.sent()
        batch_request = ports.gemini.batch_request(
            model=plan.model,
            images=[s.part for s in sent],
            request=plan.request,
            options=plan.options,
            key=plan.job_id,
        )
    ports.batches.add_job(
        plan.job_id,
        job=plan.job.as_record(),
        request=batch_request,
        model=plan.model,
        fingerprint=plan.fingerprint,
        transports=[s.transport for s in sent],
        estimate_usd=estimate,
        timings_ms={k: round(v * 1000, 1) for k, v in timer.seconds.items()},
        images=[f.to_json() for f in acquired.facts],
        attempt=plan.attempt,
    )


def obtain(
    plan: JobPlan,
    ports: Ports,
    acquired: Acquired,
    paid: PaidAnswer | None,
    lookup: Lookup,
    timer: StageTimer,
) -> Obtained:
    """The job's answer, read: the one this job already paid for, the cache's, or the
    model's."""
    reused = lookup.found
    if paid is not None:
        # an earlier delivery was answered and died before committing: publish that
        # answer instead of paying for a second one
        log.info("reusing the stored model answer", extra={"job_id": plan.job_id})
        answer, transports = paid
    elif reused is not None:
        log.info(
            "reusing the answer of an identical request",
            extra={"job_id": plan.job_id, "answered_for": reused.job_id},
        )
        # nothing was sent and nothing was spent; the job's mode is its own, whichever
        # way the answer it reuses was bought
        answer = replace(reused.answer, usage=TokenUsage(), batch=plan.batch)
        transports = [REUSED_TRANSPORT] * len(acquired.facts)
    else:
        assert acquired.images is not None
        with timer.stage("ask"):
            transports, answer = _ask(
                plan, ports, acquired.images, estimate_usd(plan, ports, acquired.image_tokens)
            )
        # paid for: kept before anything else can fail, so no retry pays again
        ports.answers.put(plan.job_id, plan.fingerprint, answer, transports)

    key = acquired.cache_key
    with timer.stage("read"):
        try:
            parsed = plan.task.parse(answer.text, plan.spec, [f.size for f in acquired.facts])
            output, warnings = bounded_output(parsed)
        except ModelOutputInvalid:
            ports.answers.forget(plan.job_id)  # unreadable: the retry asks afresh
            if reused is not None and key is not None:
                ports.answer_cache.forget(key)  # and not from the cache again
            raise
    if key is not None and reused is None:
        # read successfully: identical requests from now on reuse it (a fresh answer
        # replaces the one before it). A paid answer counts too: a batch's answers reach
        # their jobs this way, and a redelivery may publish what a dead worker bought.
        ports.answer_cache.put(key, answer, job_id=plan.job_id, replace=plan.job.options.fresh)
        ANSWER_CACHE.labels("stored").inc()
    return Obtained(answer, transports, replace(parsed, output=output, warnings=warnings), reused)


def _ask(
    plan: JobPlan, ports: Ports, images: RequestImages, estimate: float
) -> tuple[list[str], ModelAnswer]:
    """Send the images (inline or by File API URI) and the prompt; recover once when
    Gemini no longer knows a cached file or has not finished processing it. Returns how
    each image went, and the answer. Each call is paid from the fleet's day budget
    (`worker.fleet.budget`): reserved at its estimate, settled at its cost."""
    settings = ports.settings
    model_label = metric_model(plan.model, settings)

    def call(sent: list[SentImage]) -> tuple[list[str], ModelAnswer]:
        max_wait_s = settings.gvw_rate_limit_max_wait_s
        reservation = ports.budget.reserve(estimate, max_wait_s=max_wait_s)
        if plan.capped and plan.job.run is not None:
            try:
                ports.runs.reserve(plan.job.run, plan.job_id, estimate)
            except BaseException:
                ports.budget.settle(reservation, 0.0)  # nothing was asked
                raise
        try:
            ports.limiter.acquire(max_wait_s=max_wait_s)
            answer = ports.gemini.generate(
                model=plan.model,
                images=[s.part for s in sent],
                request=plan.request,
                options=plan.options,
            )
        except GvwError as err:
            # refused before any work (429, 4xx) costs nothing; anything else may have
            # been billed, and keeps its estimate
            refused = isinstance(err, ModelRateLimited | ModelRejected)
            _settle(plan, ports, reservation, 0.0 if refused else estimate)
            if err.details.get("local"):
                raise  # the fleet's own rate limit: Gemini was not called
            MODEL_CALLS.labels(model_label, err.code).inc()
            if isinstance(err, ModelRateLimited) and err.retry_after_s:
                # one worker's 429 holds back the whole fleet for the time Gemini asked
                ports.limiter.cool_down(err.retry_after_s)
            raise
        except BaseException:
            _settle(plan, ports, reservation, estimate)
            raise
        MODEL_CALLS.labels(model_label, "ok").inc()
        cost = answer_cost_usd(ports, plan.model, answer)
        _settle(plan, ports, reservation, cost if cost is not None else estimate)
        if cost is not None:
            COST_USD.labels(model_label).inc(cost)
        TOKENS.labels("prompt").inc(answer.usage.prompt_tokens)
        TOKENS.labels("output").inc(answer.usage.output_tokens)
        TOKENS.labels("thoughts").inc(answer.usage.thoughts_tokens)
        return [s.transport for s in sent], answer

    sent = images.sent()
    try:
        return call(sent)
    except FileUriRejected:  # expired, deleted or another project's: upload again, once
        sent = images.replace_files()
    except FileNotActive:  # still PROCESSING: wait for ACTIVE, once
        images.wait_files_active()
    except UrlNotFetched as err:  # expired or unreachable from Google: the bytes, once
        log.warning(
            "Gemini could not fetch an image by URL, sending the bytes",
            extra={"job_id": plan.job_id, "error_message": err.message},
        )
        URL_FALLBACKS.labels("not_fetched").inc()
        sent = images.replace_urls(err.message)
    return call(sent)


def _settle(plan: JobPlan, ports: Ports, reservation: Reservation | None, cost: float) -> None:
    """A call's reservations settled: the day's budget's, and its run's cap's."""
    ports.budget.settle(reservation, cost)
    if plan.capped and plan.job.run is not None:
        ports.runs.settle(plan.job.run, plan.job_id, cost)


def estimate_usd(plan: JobPlan, ports: Ports, image_tokens: int, *, batch: bool = False) -> float:
    """What the call is expected to cost (`tasks.pricing.call_estimate_usd`); nothing to
    reserve without a budget or a run's cap."""
    if not (ports.budget.enabled or plan.capped):
        return 0.0
    estimate = pricing.call_estimate_usd(
        ports.prices,
        plan.model,
        plan.request,
        image_tokens=image_tokens,
        max_output_tokens=plan.options.max_output_tokens,
        thinking_budget=plan.options.thinking_budget,
        batch=batch,
    )
    return estimate or 0.0


def answer_cost_usd(ports: Ports, model: str, answer: ModelAnswer) -> float | None:
    """What this answer cost at the price table's rates (thinking billed as output)."""
    usage = answer.usage
    return pricing.answer_cost_usd(
        ports.prices,
        model,
        prompt_tokens=usage.prompt_tokens,
        output_tokens=usage.output_tokens,
        thoughts_tokens=usage.thoughts_tokens,
        batch=answer.batch,
    )
