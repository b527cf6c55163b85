"""One job, one way: fetch -> prepare -> ask -> read -> publish.

The only caller of the ports (storage, Gemini, locks). Decisions come from `tasks/`;
this module gathers inputs, calls them, and writes the outputs.

Key layout under `{output}/{job_id}/` (docs/contract.md, "Results"):

    result.json                       written last, once (conditional create)
    error.json                        instead of result.json when the job failed for good
    attempts/{attempt_id}/overlay.jpg artifacts of one attempt (overlay.png for non-photos);
                                      result.json names them
    attempts/{attempt_id}/masks/...

Artifacts go under a folder unique to the attempt, so two attempts racing on an
at-least-once queue never overwrite each other's files, and the winner's result.json
references only its own.
"""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Sequence
from dataclasses import replace

from tasks import pricing, registry
from tasks.base import ModelRequest, TaskOutput, TaskSpec, VisionTask
from tasks.errors import (
    FileNotActive,
    FileUriRejected,
    GvwError,
    InvalidJob,
    JobBusy,
    JobIdConflict,
    ModelOutputInvalid,
    ModelRateLimited,
    ModelRejected,
    UrlNotFetched,
    WorkerLost,
)
from tasks.model_families import media_resolution_for
from tasks.pricing import call_estimate_usd
from tasks.tokens import estimate_image_tokens
from worker.contract.jobs import Job
from worker.contract.layout import RESULT_NAME, job_folder
from worker.contract.records import (
    Outcome,
    ResultRecord,
    ReusedAnswer,
    Usage,
    bounded_output,
)
from worker.fleet.answer_cache import Lookup, answer_key
from worker.gemini import GenerationOptions, ModelAnswer
from worker.gemini.records import TokenUsage
from worker.images.prepare import ImageFacts, PreparedImage, fit_within, prepare_image
from worker.observability import (
    ANSWER_CACHE,
    COST_USD,
    MODEL_CALLS,
    TOKENS,
    URL_FALLBACKS,
    StageTimer,
)
from worker.pipeline.artifacts import OVERLAY_TASKS, write_artifacts
from worker.pipeline.failures import publish_pending_record
from worker.pipeline.ports import Ports
from worker.pipeline.record_store import JSON_TYPE, finished
from worker.pipeline.request_images import RequestImages, SentImage
from worker.pipeline.url_transport import remote_image
from worker.settings import Settings
from worker.storage import join_uri
from worker.storage.uris import check_allowed

log = logging.getLogger(__name__)

_JSON = "application/json"
# A record is read back only to see whose it is (its fingerprint); none is near this.
RECORD_READ_MAX_BYTES = 64_000_000
# images[].transport of a job whose answer came from the answer cache: nothing was sent
REUSED_TRANSPORT = "none"


def run(
    job: Job,
    ports: Ports,
    *,
    attempt: int = 1,
    timer: StageTimer | None = None,
) -> Outcome:
    """Run one job to a committed result.json. Raises GvwError subclasses on failure."""
    settings = ports.settings
    timer = timer or StageTimer()
    check_model_allowed(job.model, settings)
    model = job.model or settings.gvw_model
    # a resolution this model does not take is the job's error, found before any I/O
    media_resolution_for(model, job.options.media_resolution)
    if ports.budget.enabled and ports.prices.price_of(model) is None:
        raise InvalidJob(
            f"model {model[:200]!r} has no price in the price table, and this fleet "
            "spends within a budget (GVW_BUDGET_USD_PER_DAY): add it with GVW_PRICES_FILE",
            field="model",
        )
    # Every URI is checked before any is read: one bad URI refuses the whole job. The
    # parsed spelling is what the I/O below uses (worker.storage.uris: one parser).
    output = (
        check_allowed(job.output, settings.allowed_output_prefixes, role="output").text
        if job.output is not None
        else None
    )
    input_uris = [
        check_allowed(uri, settings.allowed_input_prefixes, role="input").text for uri in job.images
    ]
    folder = job_folder(job.job_id, output, settings)
    fingerprint = job.fingerprint(folder)
    if ports.budget.enabled and ports.answers.get(job.job_id, fingerprint) is None:
        # a day with no room left sends the job back before it reads anything (an
        # answer already paid for, a batch's, is published whatever the day has left)
        ports.budget.ensure_open()
    claim = ports.claims.claim(job.job_id, fingerprint, folder)
    if not claim.ours:
        raise JobIdConflict(job.job_id, holder_folder=claim.holder_folder)
    if claim.pending_record:
        # this job already failed for good while storage was down: write that record
        return publish_pending_record(ports, job.job_id, folder)
    with ports.locks.hold(job.job_id) as held:
        if not held:
            raise JobBusy(f"job {job.job_id} is running on another worker")
        # Checked under the lock (once: S3 requests are most of a job's own cost): a
        # committed or failed job finishes here, without fetching or calling the model.
        done = finished(ports.stores, job.job_id, folder, fingerprint)
        if done is not None:
            return done
        if job.options.mode == "batch" and ports.batches is None:
            raise InvalidJob(
                "batch mode needs the fleet's Redis (GVW_REDIS_URL)", field="options.mode"
            )
        if (
            ports.batches is not None
            and ports.batches.is_waiting(job.job_id)
            and ports.answers.get(job.job_id, fingerprint) is None
        ):
            # a redelivery of a job already waiting for its batch, or the same job sent
            # again without batch mode (the mode is not part of the job): its batch
            # answers it, and nothing is paid twice
            return Outcome(job_id=job.job_id, status="batched", record_uri="")
        # Runs that took the lock and never ended, counted here and per job: a delivery
        # that only met a dead run's lock (JobBusy) is not a run, and its Celery retry
        # must not start a fresh count. A run that ends in this worker, however it ends,
        # clears it; a kill leaves it, so it counts consecutive runs that died.
        died = ports.deliveries.count(job.job_id, 0) - 1
        if died >= settings.gvw_max_deliveries:
            # no live worker holds the job, yet its runs keep dying with their worker
            # (out of memory, a crashing decoder). Stop the loop here.
            raise WorkerLost(
                f"the job's last {died} runs died with their worker "
                f"(GVW_MAX_DELIVERIES={settings.gvw_max_deliveries})",
                deliveries=died,
            )
        try:
            return _run_locked(job, ports, input_uris, folder, fingerprint, attempt, timer)
        finally:
            ports.deliveries.clear(job.job_id, 0)


# what an upload named by a batch request must have left: the API answers a batch within
# 24 hours, and a request that failed inside one is asked again in the next
BATCH_FILE_LIFE_S = 30 * 3600.0


def _batch_images(ports: Ports, job_id: str, count: int) -> list[ImageFacts] | None:
    """The images a batch request described (`BatchStore.add_job`), or None: the job's
    images are then fetched again."""
    stored = ports.batches.images(job_id) if ports.batches is not None else None
    if stored is None or len(stored) != count:
        return None
    try:
        return [ImageFacts.from_json(item) for item in stored]
    except (TypeError, KeyError, ValueError):
        log.warning("unreadable batch image records; fetching the images", exc_info=True)
        return None


def check_model_allowed(model: str | None, settings: Settings) -> None:
    allowed = settings.allowed_models
    if model is not None and allowed and model not in allowed:
        raise InvalidJob(
            f"model {model[:200]!r} is not one this fleet runs (GVW_ALLOWED_MODELS: "
            f"{', '.join(sorted(allowed))})",
            field="model",
        )


def _run_locked(
    job: Job,
    ports: Ports,
    input_uris: Sequence[str],
    folder: str,
    fingerprint: str,
    attempt: int,
    timer: StageTimer,
) -> Outcome:
    settings = ports.settings
    task = registry.get_task(job.task)
    spec = job.spec()
    model = job.model or settings.gvw_model
    request = task.build_request(spec)
    # tasks that ask for it (segment) get a reduced copy; 0 in the settings disables it
    fit_px = settings.gvw_fit_within_px if request.fit_within_px is not None else 0
    # detect and segment: the first image's size places the masks; its pixels are kept
    # only when an overlay is drawn on them
    draws = job.task in OVERLAY_TASKS
    keeps_pixels = draws and job.options.overlay

    def prepare(index: int, pixels_left: int | None) -> PreparedImage:
        with timer.stage("fetch"):
            data = ports.stores.get_bytes(input_uris[index], max_bytes=settings.gvw_max_input_bytes)
        with timer.stage("prepare"):
            overlay = keeps_pixels and index == 0
            image = prepare_image(
                data,
                max_pixels=settings.gvw_max_image_pixels,
                keep_pixels=overlay or fit_px > 0,
                job_pixels_left=pixels_left,
                # decode no larger than what uses the pixels: the overlay, the copy sent
                pixels_side_px=(settings.gvw_overlay_max_side_px or None) if overlay else 0,
                sent_side_px=fit_px,
            )
            image = fit_within(image, fit_px)
            if not overlay and image.upright is not None:
                image = replace(image, upright=None)  # only the overlay needs pixels
        return image

    options = GenerationOptions(
        temperature=job.options.temperature,
        thinking_budget=job.options.thinking_budget,
        max_output_tokens=job.options.max_output_tokens,
        media_resolution=job.options.media_resolution,
    )
    # the answer cache is looked up once every image is known (by its bytes as sent)
    looks_up = ports.answer_cache.enabled and not job.options.fresh
    paid = ports.answers.get(job.job_id, fingerprint)
    images: RequestImages | None = None
    if paid is None:
        images = ports.sender().start(
            prompt_bytes=len(request.prompt.encode()),
            job_id=job.job_id,
            refetch=lambda index: prepare(index, None),
            defer_uploads=looks_up,
            # a batch request names its images (it waits in Redis, and a batch is small),
            # by uploads Gemini keeps past the batch's 24 hours: never a URL that lives
            # minutes (GVW_URL_TTL_S), nor a cached file about to be deleted
            mode="file_api" if job.options.mode == "batch" else settings.gvw_transport,
            min_file_life_s=BATCH_FILE_LIFE_S if job.options.mode == "batch" else 0.0,
        )
    # One image at a time: fetched, checked against the job's pixel budget before it is
    # decoded, prepared, and handed to the request (which keeps only what it sends).
    # A batch's answer is published with the images as its request described them: not
    # fetched again (unless an overlay needs the pixels), and the record describes what
    # was sent, even if an object changed in the hours the batch took.
    as_sent = (
        _batch_images(ports, job.job_id, len(input_uris))
        if paid is not None and job.options.mode == "batch"
        else None
    )
    described = None if keeps_pixels else as_sent
    facts: list[ImageFacts] = list(described or [])
    first: PreparedImage | None = None
    pixels_left = settings.gvw_max_job_pixels
    by_url = settings.gvw_transport == "url" and job.options.mode != "batch"
    for index, uri in enumerate(input_uris if described is None else []):
        # GVW_TRANSPORT=url: what Gemini can take as stored goes as a URL, read by the
        # worker only as far as its header (the overlay's image needs its pixels)
        remote = None
        if by_url and not (keeps_pixels and index == 0):
            with timer.stage("fetch"):
                remote = remote_image(
                    ports.stores,
                    uri,
                    settings,
                    fit_within_px=fit_px,
                    job_pixels_left=pixels_left,
                )
        if remote is not None:
            pixels_left -= remote.facts.width_px * remote.facts.height_px
            facts.append(remote.facts)
            if images is not None:
                images.add_url(remote.part)
            continue
        image = prepare(index, pixels_left)
        pixels_left -= image.width_px * image.height_px
        facts.append(image.facts(uri))
        if draws and index == 0:
            first = image
        if images is not None:
            with timer.stage("ask"):  # uploads, when the request outgrows inline
                images.add(image)
        del image

    changed: list[str] = []
    if (
        as_sent is not None
        and described is None
        and [f.sent_sha256 for f in as_sent] != [f.sent_sha256 for f in facts]
    ):
        # fetched again for the overlay: an object replaced while its batch was pending
        # is not what the answer describes. The answer is read, cached and recorded
        # with the images that were sent, and no overlay is drawn on the new pixels.
        facts, first = as_sent, None
        changed.append("an image changed after its batch request was built: no overlay")
    cache_key = (
        answer_key(
            model=model,
            request=request,
            options=options,
            images=[(f.sent_sha256, f.mime_type) for f in facts],
        )
        if ports.answer_cache.enabled
        else None
    )
    image_tokens = sum(
        estimate_image_tokens(
            *f.sent_width_height_px, model=model, media_resolution=options.media_resolution
        )
        for f in facts
    )
    lookup = Lookup()
    if paid is None and cache_key is not None and looks_up:
        # a duplicate being asked right now elsewhere is waited for, at most as long as
        # one model call may take
        lookup = ports.answer_cache.lookup(cache_key, wait_s=settings.gvw_gemini_timeout_s)
        ANSWER_CACHE.labels("hit" if lookup.found else "miss").inc()
    if paid is None and lookup.found is None and job.options.mode == "batch":
        try:
            assert images is not None and ports.batches is not None
            with timer.stage("ask"):  # uploads: a batch request names its images
                sent = images.sent()
                batch_request = ports.gemini.batch_request(
                    model=model,
                    images=[s.part for s in sent],
                    request=request,
                    options=options,
                    key=job.job_id,
                )
            ports.batches.add_job(
                job.job_id,
                job=job.as_record(),
                request=batch_request,
                model=model,
                fingerprint=fingerprint,
                transports=[s.transport for s in sent],
                estimate_usd=_estimate_usd(
                    ports, model, request, options, image_tokens, batch=True
                ),
                timings_ms={k: round(v * 1000, 1) for k, v in timer.seconds.items()},
                images=[f.to_json() for f in facts],
                attempt=attempt,
            )
        finally:
            if cache_key is not None and lookup.lead_token is not None:
                ports.answer_cache.release(cache_key, lookup.lead_token)
        ports.schedule_batch_run()
        log.info("job waits for a batch", extra={"job_id": job.job_id, "model": model})
        return Outcome(job_id=job.job_id, status="batched", record_uri="", timings_s=timer.seconds)
    try:
        answer, transports, parsed = _answer(
            job, ports, task, spec, model, request, options,
            images=images, facts=facts, paid=paid, lookup=lookup,
            fingerprint=fingerprint, cache_key=cache_key, timer=timer,
            estimate_usd=_estimate_usd(ports, model, request, options, image_tokens),
        )  # fmt: skip
    finally:
        if cache_key is not None and lookup.lead_token is not None:
            ports.answer_cache.release(cache_key, lookup.lead_token)
    notes = [*(images.notes if images is not None else []), *changed]
    for index, sha256 in (images.read_back if images is not None else {}).items():
        facts[index] = replace(facts[index], sha256=sha256)
    del images
    reused = lookup.found

    with timer.stage("publish"):
        attempt_id = f"{int(time.time())}-{uuid.uuid4().hex[:8]}"
        written: list[str] = []
        artifacts = write_artifacts(
            job,
            ports.stores,
            settings.gvw_overlay_max_side_px,
            folder,
            attempt_id,
            (facts[0].width_px, facts[0].height_px) if draws else None,
            first,
            parsed,
            written,
        )
        # a redelivery publishing its own paid answer records what that answer cost
        cost_usd = answer_cost_usd(ports, model, answer)
        record = ResultRecord(
            job_id=job.job_id,
            task=job.task,
            model=model,
            model_version=answer.model_version,
            images=[f.record(t) for f, t in zip(facts, transports, strict=True)],
            output=parsed.output,
            artifacts=artifacts,
            usage=Usage(
                prompt_tokens=answer.usage.prompt_tokens,
                output_tokens=answer.usage.output_tokens,
                total_tokens=answer.usage.total_tokens,
                thoughts_tokens=answer.usage.thoughts_tokens,
                estimated_image_tokens=image_tokens,
                cost_usd=cost_usd,
            ),
            warnings=[
                *(f"image {i}: {w}" for i, f in enumerate(facts) for w in f.decoder_warnings),
                *notes,
                *parsed.warnings,
            ],
            timings_ms={
                **{k: round(v * 1000, 1) for k, v in timer.seconds.items()},
                # a batch answer: the run that prepared the request, before the batch
                **(
                    {f"batch_{k}": v for k, v in ports.batches.timings_ms(job.job_id).items()}
                    if answer.batch and ports.batches is not None
                    else {}
                ),
            },
            attempt=attempt,
            attempt_id=attempt_id,
            finish_reason=answer.finish_reason,
            fingerprint=fingerprint,
            media_resolution=options.media_resolution,
            mode="batch" if answer.batch else "interactive",
            answer_reused_from=(
                ReusedAnswer(job_id=reused.job_id, answered_at=reused.answered_at)
                if reused is not None
                else None
            ),
        )
        result_uri = join_uri(folder, RESULT_NAME)
        created = ports.stores.create_exclusive(
            result_uri, record.to_json_bytes(), content_type=JSON_TYPE
        )
        # committed (by us or a racing attempt): the paid answer has done its job
        ports.answers.forget(job.job_id)
        if not created:
            # Another attempt committed first: its result stands, ours is discarded.
            _delete_quietly(ports, written)
            return Outcome(
                job_id=job.job_id,
                status="succeeded",
                record_uri=result_uri,
                already_done=True,
                timings_s=timer.seconds,
            )
    log.info("job committed", extra={"job_id": job.job_id, "task": job.task, "uri": result_uri})
    return Outcome(
        job_id=job.job_id, status="succeeded", record_uri=result_uri, timings_s=timer.seconds
    )


def _answer(
    job: Job,
    ports: Ports,
    task: VisionTask,
    spec: TaskSpec,
    model: str,
    request: ModelRequest,
    options: GenerationOptions,
    *,
    images: RequestImages | None,
    facts: Sequence[ImageFacts],
    paid: tuple[ModelAnswer, list[str]] | None,
    lookup: Lookup,
    fingerprint: str,
    cache_key: str | None,
    timer: StageTimer,
    estimate_usd: float,
) -> tuple[ModelAnswer, list[str], TaskOutput]:
    """The job's answer, read: the one this job already paid for, the cache's, or the
    model's. Returns it with how each image went and what the task read from it."""
    reused = lookup.found
    if paid is not None:
        # an earlier delivery was answered and died before committing: publish that
        # answer instead of paying for a second one
        log.info("reusing the stored model answer", extra={"job_id": job.job_id})
        answer, transports = paid
    elif reused is not None:
        log.info(
            "reusing the answer of an identical request",
            extra={"job_id": job.job_id, "answered_for": reused.job_id},
        )
        # nothing was sent and nothing was spent; the job's mode is its own, whichever
        # way the answer it reuses was bought
        answer = replace(reused.answer, usage=TokenUsage(), batch=job.options.mode == "batch")
        transports = [REUSED_TRANSPORT] * len(facts)
    else:
        assert images is not None
        with timer.stage("ask"):
            transports, answer = _ask(
                ports, job.job_id, model, images, request, options, estimate_usd
            )
        # paid for: kept before anything else can fail, so no retry pays again
        ports.answers.put(job.job_id, fingerprint, answer, transports)

    with timer.stage("read"):
        try:
            parsed = task.parse(answer.text, spec, [f.size for f in facts])
            output, warnings = bounded_output(parsed)
        except ModelOutputInvalid:
            ports.answers.forget(job.job_id)  # unreadable: the retry asks afresh
            if reused is not None and cache_key is not None:
                ports.answer_cache.forget(cache_key)  # and not from the cache again
            raise
    if cache_key is not None and reused is None:
        # read successfully: identical requests from now on reuse it (a fresh answer
        # replaces the one before it). A paid answer counts too: a batch's answers reach
        # their jobs this way, and a redelivery may publish what a dead worker bought.
        ports.answer_cache.put(cache_key, answer, job_id=job.job_id, replace=job.options.fresh)
        ANSWER_CACHE.labels("stored").inc()
    return answer, transports, replace(parsed, output=output, warnings=warnings)


def _ask(
    ports: Ports,
    job_id: str,
    model: str,
    images: RequestImages,
    request: ModelRequest,
    options: GenerationOptions,
    estimate_usd: float,
) -> tuple[list[str], ModelAnswer]:
    """Send the images (inline or by File API URI) and the prompt; recover once when
    Gemini no longer knows a cached file or has not finished processing it. Returns how
    each image went, and the answer. Each call is paid from the fleet's day budget
    (`worker.fleet.budget`): reserved at its estimate, settled at its cost."""
    settings = ports.settings
    model_label = metric_model(model, settings)

    def call(sent: list[SentImage]) -> tuple[list[str], ModelAnswer]:
        max_wait_s = settings.gvw_rate_limit_max_wait_s
        reservation = ports.budget.reserve(estimate_usd, max_wait_s=max_wait_s)
        try:
            ports.limiter.acquire(max_wait_s=max_wait_s)
            answer = ports.gemini.generate(
                model=model, images=[s.part for s in sent], request=request, options=options
            )
        except GvwError as err:
            # refused before any work (429, 4xx) costs nothing; anything else may have
            # been billed, and keeps its estimate
            refused = isinstance(err, ModelRateLimited | ModelRejected)
            ports.budget.settle(reservation, 0.0 if refused else estimate_usd)
            if err.details.get("local"):
                raise  # the fleet's own rate limit: Gemini was not called
            MODEL_CALLS.labels(model_label, err.code).inc()
            if isinstance(err, ModelRateLimited) and err.retry_after_s:
                # one worker's 429 holds back the whole fleet for the time Gemini asked
                ports.limiter.cool_down(err.retry_after_s)
            raise
        except BaseException:
            ports.budget.settle(reservation, estimate_usd)
            raise
        MODEL_CALLS.labels(model_label, "ok").inc()
        cost = answer_cost_usd(ports, model, answer)
        ports.budget.settle(reservation, cost if cost is not None else estimate_usd)
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
            extra={"job_id": job_id, "error_message": err.message},
        )
        URL_FALLBACKS.labels("not_fetched").inc()
        sent = images.replace_urls(err.message)
    return call(sent)


def _estimate_usd(
    ports: Ports,
    model: str,
    request: ModelRequest,
    options: GenerationOptions,
    image_tokens: int,
    *,
    batch: bool = False,
) -> float:
    """What the call is expected to cost (`tasks.pricing.call_estimate_usd`); nothing to
    reserve without a budget."""
    if not ports.budget.enabled:
        return 0.0
    estimate = call_estimate_usd(
        ports.prices,
        model,
        request,
        image_tokens=image_tokens,
        max_output_tokens=options.max_output_tokens,
        thinking_budget=options.thinking_budget,
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


def metric_model(model: str, settings: Settings) -> str:
    """The model as a metric label: one the fleet knows (GVW_MODEL, GVW_ALLOWED_MODELS),
    or "other", so a producer's made-up model names cannot grow the series without end."""
    return model if model == settings.gvw_model or model in settings.allowed_models else "other"


def _delete_quietly(ports: Ports, uris: Sequence[str]) -> None:
    for uri in uris:
        try:
            ports.stores.delete(uri)
        except Exception:  # orphans are harmless: nothing references them
            log.debug("could not delete orphan artifact %s", uri, exc_info=True)
