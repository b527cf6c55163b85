"""One job, one way: fetch -> prepare -> ask -> read -> publish.

The only caller of the ports (storage, Gemini, locks). Decisions come from `tasks/`;
this module gathers inputs, calls them, and writes the outputs.

Key layout under `{output}/{job_id}/` (CONTRACT.md "Results"):

    result.json                       written last, once (conditional create)
    error.json                        instead of result.json when the job failed for good
    attempts/{attempt_id}/overlay.png artifacts of one attempt; result.json names them
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
from dataclasses import dataclass, replace
from typing import Any

from tasks import registry
from tasks.base import ModelRequest, TaskOutput
from tasks.errors import (
    FileNotActive,
    FileUriRejected,
    GvwError,
    InvalidJob,
    JobBusy,
    JobIdConflict,
    ModelOutputInvalid,
    ModelRateLimited,
    RecordNotWritten,
    RetryableError,
    WorkerLost,
)
from tasks.masks import BoxMask
from tasks.rle import encode_box_mask_rle
from tasks.tokens import estimate_image_tokens
from worker.answer_store import AnswerStore
from worker.artifacts import encode_mask_png, render_overlay_png, slug
from worker.deliveries import Deliveries
from worker.gemini import GeminiGateway, GenerationOptions, ModelAnswer
from worker.gemini.file_cache import FileCache
from worker.gemini.transport import ImageSender, RequestImages, SentImage
from worker.images import ImageFacts, PreparedImage, fit_within, prepare_image
from worker.job_claims import JobClaims
from worker.job_locks import JobLocks
from worker.jobs import Job, raw_fingerprint
from worker.layout import ERROR_NAME, RESULT_NAME, job_folder
from worker.observability import DEAD_LETTERS, MODEL_CALLS, STAGE_SECONDS, TOKENS
from worker.ratelimit import RateLimiter
from worker.records import (
    ErrorRecord,
    Outcome,
    ResultRecord,
    Usage,
    bounded_output,
    error_record,
    read_record,
    shrink_for_redis,
)
from worker.settings import Settings
from worker.storage import StoreRouter, join_uri
from worker.storage.uris import check_allowed

log = logging.getLogger(__name__)

_JSON = "application/json"
# A record is read back only to see whose it is (its fingerprint); none is near this.
RECORD_READ_MAX_BYTES = 64_000_000


@dataclass
class Ports:
    """Everything a job touches, built once per process (see `worker.runtime`)."""

    settings: Settings
    stores: StoreRouter
    gemini: GeminiGateway
    locks: JobLocks
    files: FileCache
    limiter: RateLimiter
    deliveries: Deliveries
    answers: AnswerStore
    claims: JobClaims

    def sender(self) -> ImageSender:
        return ImageSender(
            self.gemini,
            self.files,
            inline_max_bytes=self.settings.gvw_inline_max_bytes,
            active_timeout_s=self.settings.gvw_file_active_timeout_s,
        )


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
        done = _finished(ports, job.job_id, folder, fingerprint)
        if done is not None:
            return done
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


def check_model_allowed(model: str | None, settings: Settings) -> None:
    allowed = settings.allowed_models
    if model is not None and allowed and model not in allowed:
        raise InvalidJob(
            f"model {model[:200]!r} is not one this fleet runs (GVW_ALLOWED_MODELS: "
            f"{', '.join(sorted(allowed))})",
            field="model",
        )


def _finished(ports: Ports, job_id: str, folder: str, fingerprint: str) -> Outcome | None:
    result_uri = join_uri(folder, RESULT_NAME)
    error_uri = join_uri(folder, ERROR_NAME)
    # both at once: almost every job is new, and then both lookups must be made
    has_result, has_error = ports.stores.exists_each([result_uri, error_uri])
    if not (has_result or has_error):
        return None
    uri = result_uri if has_result else error_uri
    # the records say which job they belong to: another job under the same id (in the
    # same folder) must not pass for this one, nor read them
    owner = read_record(ports.stores.get_bytes(uri, max_bytes=RECORD_READ_MAX_BYTES)).fingerprint
    if owner is not None and owner != fingerprint:  # records older than fingerprints: ours
        raise JobIdConflict(job_id, holder_folder=folder)
    return Outcome(
        job_id=job_id,
        status="succeeded" if has_result else "failed",
        record_uri=uri,
        already_done=True,
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
    draws = job.task in _OVERLAY_TASKS

    def prepare(index: int, pixels_left: int | None) -> PreparedImage:
        with timer.stage("fetch"):
            data = ports.stores.get_bytes(input_uris[index], max_bytes=settings.gvw_max_input_bytes)
        with timer.stage("prepare"):
            overlay = draws and index == 0
            image = prepare_image(
                data,
                max_pixels=settings.gvw_max_image_pixels,
                keep_pixels=overlay or fit_px > 0,
                job_pixels_left=pixels_left,
            )
            image = fit_within(image, fit_px)
            if not overlay and image.upright is not None:
                image = replace(image, upright=None)  # only the overlay needs pixels
        return image

    paid = ports.answers.get(job.job_id, fingerprint)
    images: RequestImages | None = None
    if paid is None:
        images = ports.sender().start(
            prompt_bytes=len(request.prompt.encode()),
            job_id=job.job_id,
            refetch=lambda index: prepare(index, None),
        )
    # One image at a time: fetched, checked against the job's pixel budget before it is
    # decoded, prepared, and handed to the request (which keeps only what it sends).
    facts: list[ImageFacts] = []
    first: PreparedImage | None = None
    pixels_left = settings.gvw_max_job_pixels
    for index, uri in enumerate(input_uris):
        image = prepare(index, pixels_left)
        pixels_left -= image.width_px * image.height_px
        facts.append(image.facts(uri))
        if draws and index == 0:
            first = image
        if images is not None:
            with timer.stage("ask"):  # uploads, when the request outgrows inline
                images.add(image)
        del image

    if paid is not None:
        # an earlier delivery was answered and died before committing: publish that
        # answer instead of paying for a second one
        log.info("reusing the stored model answer", extra={"job_id": job.job_id})
        answer, transports = paid
    else:
        assert images is not None
        with timer.stage("ask"):
            options = GenerationOptions(
                temperature=job.options.temperature,
                thinking_budget=job.options.thinking_budget,
                max_output_tokens=job.options.max_output_tokens,
            )
            transports, answer = _ask(ports, job.job_id, model, images, request, options)
        # paid for: kept before anything else can fail, so no retry pays again
        ports.answers.put(job.job_id, fingerprint, answer, transports)

    with timer.stage("read"):
        try:
            parsed = task.parse(answer.text, spec, [f.size for f in facts])
            output, warnings = bounded_output(parsed)
        except ModelOutputInvalid:
            ports.answers.forget(job.job_id)  # unreadable: the retry asks afresh
            raise
    parsed = replace(parsed, output=output, warnings=warnings)

    with timer.stage("publish"):
        attempt_id = f"{int(time.time())}-{uuid.uuid4().hex[:8]}"
        written: list[str] = []
        artifacts = _write_artifacts(
            job, ports, folder, attempt_id, [first] if first else [], parsed, written
        )
        estimated = sum(estimate_image_tokens(*f.sent_width_height_px) for f in facts)
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
                estimated_image_tokens=estimated,
            ),
            warnings=[
                *(f"image {i}: {w}" for i, f in enumerate(facts) for w in f.decoder_warnings),
                *parsed.warnings,
            ],
            timings_ms={k: round(v * 1000, 1) for k, v in timer.seconds.items()},
            attempt=attempt,
            attempt_id=attempt_id,
            finish_reason=answer.finish_reason,
            fingerprint=fingerprint,
        )
        result_uri = join_uri(folder, RESULT_NAME)
        created = ports.stores.create_exclusive(
            result_uri, record.to_json_bytes(), content_type=_JSON
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


def _ask(
    ports: Ports,
    job_id: str,
    model: str,
    images: RequestImages,
    request: ModelRequest,
    options: GenerationOptions,
) -> tuple[list[str], ModelAnswer]:
    """Send the images (inline or by File API URI) and the prompt; recover once when
    Gemini no longer knows a cached file or has not finished processing it. Returns how
    each image went, and the answer."""
    model_label = metric_model(model, ports.settings)

    def call(sent: list[SentImage]) -> tuple[list[str], ModelAnswer]:
        ports.limiter.acquire(max_wait_s=ports.settings.gvw_rate_limit_max_wait_s)
        try:
            answer = ports.gemini.generate(
                model=model, images=[s.part for s in sent], request=request, options=options
            )
        except GvwError as err:
            MODEL_CALLS.labels(model_label, err.code).inc()
            if isinstance(err, ModelRateLimited) and err.retry_after_s:
                # one worker's 429 holds back the whole fleet for the time Gemini asked
                ports.limiter.cool_down(err.retry_after_s)
            raise
        MODEL_CALLS.labels(model_label, "ok").inc()
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
    return call(sent)


def metric_model(model: str, settings: Settings) -> str:
    """The model as a metric label: one the fleet knows (GVW_MODEL, GVW_ALLOWED_MODELS),
    or "other", so a producer's made-up model names cannot grow the series without end."""
    return model if model == settings.gvw_model or model in settings.allowed_models else "other"


# Tasks whose output objects carry pixel boxes on the first image get an overlay.
_OVERLAY_TASKS = frozenset({"detect", "segment"})


def _write_artifacts(
    job: Job,
    ports: Ports,
    folder: str,
    attempt_id: str,
    prepared: Sequence[PreparedImage],
    parsed: TaskOutput,
    written: list[str],
) -> dict[str, str]:
    """Mask PNGs and the overlay of the first image (``prepared[0]``, with its pixels),
    under this attempt's own folder. Mask entries are added to
    `parsed.output["objects"]` (uri, area, COCO RLE)."""
    artifacts: dict[str, str] = {}
    objects = parsed.output.get("objects")
    if job.task not in _OVERLAY_TASKS or not isinstance(objects, list) or not prepared:
        return artifacts
    base = join_uri(folder, "attempts", attempt_id)
    image = prepared[0]
    if image.upright is None:
        raise ValueError("the overlay's image was prepared without its pixels")
    masks: list[BoxMask | None] = list(parsed.masks or [None] * len(objects))
    for index, (obj, mask) in enumerate(zip(objects, masks, strict=True)):
        if mask is None:
            continue
        # names come from the index and a slug, never from the raw label
        uri = join_uri(base, "masks", f"{index:03d}-{slug(str(obj.get('label', '')))}.png")
        png = encode_mask_png(mask, image.width_px, image.height_px)
        ports.stores.put_bytes(uri, png, content_type="image/png")
        written.append(uri)
        obj["mask"] = uri
        obj["mask_area"] = mask.area_px()
        obj["mask_rle"] = encode_box_mask_rle(mask, image.width_px, image.height_px)
    png = render_overlay_png(
        image.upright, objects, masks=masks, max_side_px=ports.settings.gvw_overlay_max_side_px
    )
    uri = join_uri(base, "overlay.png")
    ports.stores.put_bytes(uri, png, content_type="image/png")
    written.append(uri)
    artifacts["overlay"] = uri
    return artifacts


# --- failures -----------------------------------------------------------------------------


def publish_error(
    ports: Ports,
    *,
    job_id: str,
    task: str | None,
    output: str | None,
    error: GvwError,
    attempts: int,
    job: Any = None,
    fingerprint: str | None = None,
) -> Outcome:
    """Record a job that failed for good: its dead-letter entry first (Redis), then its
    error.json, unless a record of this job already stands.

    The order matters when storage is down: the entry, with the record in it, is the
    job's trace, and `RecordNotWritten` sends the message back to write error.json later
    (`publish_pending_record`), never to run the job again. A job id that belongs to
    another job (`JobIdConflict`) touches none of that job's records: the refusal goes
    to the refused job's own folder where it has one, and to the log.
    """
    settings = ports.settings
    folder = job_folder(job_id, _usable_output(output, settings), settings)
    fingerprint = fingerprint or raw_fingerprint(job, folder)
    if not isinstance(error, JobIdConflict):
        claim = ports.claims.claim(job_id, fingerprint, folder)
        if not claim.ours:
            error = JobIdConflict(job_id, holder_folder=claim.holder_folder)
    record = error_record(
        job_id=job_id,
        task=task,
        error=error,
        attempts=attempts,
        fingerprint=fingerprint,
        job=job,
    )
    if isinstance(error, JobIdConflict):
        return _refuse_reused_id(ports, job_id, folder, error, record)
    # the dead-letter index: what `gvw dead-letters list | replay` reads, written first
    ports.deliveries.dead_letter(
        job_id,
        code=error.code,
        message=error.message,
        attempts=attempts,
        job=job,
        fingerprint=fingerprint,
        record=shrink_for_redis(record),
    )
    log.warning(
        "job failed", extra={"job_id": job_id, "code": error.code, "error_message": error.message}
    )
    return _write_error_record(
        ports, job_id, folder, fingerprint, record.to_json_bytes(), error.code
    )


def publish_pending_record(ports: Ports, job_id: str, folder: str) -> Outcome:
    """Write the error record a failed job left in the dead-letter index (storage was
    down when it failed); the job itself is not run again."""
    data = ports.deliveries.pending_record(job_id)
    if data is None:  # written meanwhile by another delivery
        return Outcome(
            job_id=job_id,
            status="failed",
            record_uri=join_uri(folder, ERROR_NAME),
            already_done=True,
        )
    record = ErrorRecord.model_validate_json(data)
    log.info("writing the error record kept while storage was down", extra={"job_id": job_id})
    return _write_error_record(
        ports, job_id, folder, record.fingerprint or "", data, record.error.code
    )


def _write_error_record(
    ports: Ports, job_id: str, folder: str, fingerprint: str, data: bytes, code: str
) -> Outcome:
    uri = join_uri(folder, ERROR_NAME)
    try:
        done = _finished(ports, job_id, folder, fingerprint)
        if done is not None:
            ports.deliveries.mark_recorded(job_id)
            return done
        ports.stores.create_exclusive(uri, data, content_type=_JSON)
    except RetryableError as err:
        raise RecordNotWritten(
            f"could not write the error record {uri}: {err.message}", code=code
        ) from err
    ports.deliveries.mark_recorded(job_id)
    DEAD_LETTERS.labels(code).inc()
    return Outcome(job_id=job_id, status="failed", record_uri=uri)


def _refuse_reused_id(
    ports: Ports, job_id: str, folder: str, error: JobIdConflict, record: ErrorRecord
) -> Outcome:
    log.warning(
        "job refused: job_id already used by a different job",
        extra={"job_id": job_id, "code": error.code},
    )
    uri = join_uri(folder, ERROR_NAME)
    if error.holder_folder is None or error.holder_folder == folder:
        # the id's folder is the other job's: nothing of ours may be written there
        return Outcome(job_id=job_id, status="failed", record_uri="")
    ports.stores.create_exclusive(uri, record.to_json_bytes(), content_type=_JSON)
    return Outcome(job_id=job_id, status="failed", record_uri=uri)


def job_fingerprint(job: Job, settings: Settings) -> str:
    """The fingerprint `run` claims the job's id with (its folder as run resolves it)."""
    return job.fingerprint(job_folder(job.job_id, _usable_output(job.output, settings), settings))


def _usable_output(output: str | None, settings: Settings) -> str | None:
    """The job's output when it is a valid, allowed folder; None (the default results
    folder) otherwise: a bad output is itself the error, recorded where it can be."""
    if output is None:
        return None
    try:
        return check_allowed(output, settings.allowed_output_prefixes, role="output").text
    except GvwError:
        return None


def _delete_quietly(ports: Ports, uris: Sequence[str]) -> None:
    for uri in uris:
        try:
            ports.stores.delete(uri)
        except Exception:  # orphans are harmless: nothing references them
            log.debug("could not delete orphan artifact %s", uri, exc_info=True)
