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

import json
import logging
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from tasks import registry
from tasks.base import ImageSize, ModelRequest, TaskOutput
from tasks.errors import GvwError, JobBusy, ModelRateLimited, ModelRejected, WorkerLost
from tasks.masks import BoxMask
from tasks.rle import encode_box_mask_rle
from tasks.tokens import estimate_image_tokens
from worker.answer_store import AnswerStore
from worker.artifacts import encode_mask_png, render_overlay_png, slug
from worker.deliveries import Deliveries
from worker.file_cache import FileCache
from worker.gemini import GeminiGateway, GenerationOptions, ImagePart, ModelAnswer
from worker.images import PreparedImage, fit_within, prepare_image
from worker.job_locks import JobLocks
from worker.jobs import SCHEMA_VERSION, Job, check_allowed
from worker.layout import ERROR_NAME, RESULT_NAME, job_folder
from worker.observability import DEAD_LETTERS, MODEL_CALLS, STAGE_SECONDS, TOKENS
from worker.ratelimit import RateLimiter
from worker.settings import Settings
from worker.storage import StoreRouter, join_uri
from worker.transport import ImageSender, SentImage

log = logging.getLogger(__name__)

_JSON = "application/json"


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

    def sender(self) -> ImageSender:
        return ImageSender(
            self.gemini,
            self.files,
            inline_max_bytes=self.settings.gvw_inline_max_bytes,
            active_timeout_s=self.settings.gvw_file_active_timeout_s,
        )


@dataclass
class Outcome:
    job_id: str
    status: str  # "succeeded" | "failed"
    record_uri: str
    already_done: bool = False
    timings_s: dict[str, float] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return {
            "job_id": self.job_id,
            "status": self.status,
            "uri": self.record_uri,
            "already_done": self.already_done,
        }


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


def check_output_allowed(output: str | None, settings: Settings) -> None:
    if output is not None:
        check_allowed(output, settings.allowed_output_prefixes, what="output")


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
    check_output_allowed(job.output, settings)
    # Every input is checked before any is read: one bad URI refuses the whole job.
    input_uris = [
        check_allowed(uri, settings.allowed_input_prefixes, what="input") for uri in job.images
    ]
    folder = job_folder(job.job_id, job.output, settings)
    with ports.locks.hold(job.job_id) as held:
        if not held:
            raise JobBusy(f"job {job.job_id} is running on another worker")
        # Checked under the lock (once: S3 requests are most of a job's own cost): a
        # committed or failed job finishes here, without fetching or calling the model.
        done = _finished(ports, job.job_id, folder)
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
            return _run_locked(job, ports, input_uris, folder, attempt, timer)
        finally:
            ports.deliveries.clear(job.job_id, 0)


def _finished(ports: Ports, job_id: str, folder: str) -> Outcome | None:
    result_uri = join_uri(folder, RESULT_NAME)
    error_uri = join_uri(folder, ERROR_NAME)
    # both at once: almost every job is new, and then both lookups must be made
    has_result, has_error = ports.stores.exists_each([result_uri, error_uri])
    if has_result:
        return Outcome(job_id, "succeeded", result_uri, already_done=True)
    if has_error:
        return Outcome(job_id, "failed", error_uri, already_done=True)
    return None


def _run_locked(
    job: Job,
    ports: Ports,
    input_uris: Sequence[str],
    folder: str,
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

    prepared: list[PreparedImage] = []
    for uri in input_uris:
        with timer.stage("fetch"):
            data = ports.stores.get_bytes(uri, max_bytes=settings.gvw_max_input_bytes)
        with timer.stage("prepare"):
            image = prepare_image(data, max_pixels=settings.gvw_max_image_pixels)
            prepared.append(fit_within(image, fit_px))
        del data

    sizes = [ImageSize(p.width_px, p.height_px) for p in prepared]
    paid = ports.answers.get(job.job_id)
    if paid is not None:
        # an earlier delivery was answered and died before committing: publish that
        # answer instead of paying for a second one
        log.info("reusing the stored model answer", extra={"job_id": job.job_id})
        answer, transports = paid
        sent = [
            SentImage(ImagePart(p.mime_type), "file_api" if t == "file_api" else "inline")
            for p, t in zip(prepared, transports, strict=True)
        ]
    else:
        with timer.stage("ask"):
            options = GenerationOptions(
                temperature=job.options.temperature,
                thinking_budget=job.options.thinking_budget,
                max_output_tokens=job.options.max_output_tokens,
            )
            sent, answer = _ask(ports, job.job_id, model, prepared, request, options)

    with timer.stage("read"):
        parsed = task.parse(answer.text, spec, sizes)
    if paid is None:
        ports.answers.put(job.job_id, answer, [s.transport for s in sent])

    with timer.stage("publish"):
        attempt_id = f"{int(time.time())}-{uuid.uuid4().hex[:8]}"
        written: list[str] = []
        artifacts = _write_artifacts(job, ports, folder, attempt_id, prepared, parsed, written)
        record = _result_record(
            job,
            model,
            input_uris,
            prepared,
            sent,
            parsed,
            answer,
            artifacts,
            attempt,
            attempt_id,
            timer.seconds,
        )
        result_uri = join_uri(folder, RESULT_NAME)
        created = ports.stores.create_exclusive(result_uri, _json_bytes(record), content_type=_JSON)
        # committed (by us or a racing attempt): the paid answer has done its job
        ports.answers.forget(job.job_id)
        if not created:
            # Another attempt committed first: its result stands, ours is discarded.
            _delete_quietly(ports, written)
            return Outcome(
                job.job_id, "succeeded", result_uri, already_done=True, timings_s=timer.seconds
            )
    log.info("job committed", extra={"job_id": job.job_id, "task": job.task, "uri": result_uri})
    return Outcome(job.job_id, "succeeded", result_uri, timings_s=timer.seconds)


def _ask(
    ports: Ports,
    job_id: str,
    model: str,
    prepared: Sequence[PreparedImage],
    request: ModelRequest,
    options: GenerationOptions,
) -> tuple[list[SentImage], ModelAnswer]:
    """Send the images (inline or by File API URI) and the prompt; recover once when
    Gemini no longer knows a cached file or has not finished processing it."""
    sender = ports.sender()
    sent = sender.send_plan(prepared, prompt_bytes=len(request.prompt.encode()), job_id=job_id)

    def call() -> ModelAnswer:
        ports.limiter.acquire(max_wait_s=ports.settings.gvw_rate_limit_max_wait_s)
        try:
            answer = ports.gemini.generate(
                model=model, images=[s.part for s in sent], request=request, options=options
            )
        except GvwError as err:
            MODEL_CALLS.labels(model, err.code).inc()
            if isinstance(err, ModelRateLimited) and err.retry_after_s:
                # one worker's 429 holds back the whole fleet for the time Gemini asked
                ports.limiter.cool_down(err.retry_after_s)
            raise
        MODEL_CALLS.labels(model, "ok").inc()
        TOKENS.labels("prompt").inc(answer.usage.prompt_tokens)
        TOKENS.labels("output").inc(answer.usage.output_tokens)
        TOKENS.labels("thoughts").inc(answer.usage.thoughts_tokens)
        return answer

    try:
        return sent, call()
    except ModelRejected as err:
        uses_files = any(s.transport == "file_api" for s in sent)
        status = err.details.get("status")
        if uses_files and err.details.get("http_status") in (403, 404):
            # the API answers 403, not 404, for an expired, deleted or foreign file
            sent = sender.replace_files(prepared, sent, job_id=job_id)
        elif uses_files and status == "FAILED_PRECONDITION":
            sender.wait_files_active(sent, job_id=job_id)
        else:
            raise
    return sent, call()


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
    """Mask PNGs and the overlay, under this attempt's own folder. Mask entries are added
    to `parsed.output["objects"]` (uri, area, COCO RLE)."""
    artifacts: dict[str, str] = {}
    objects = parsed.output.get("objects")
    if job.task not in _OVERLAY_TASKS or not isinstance(objects, list):
        return artifacts
    base = join_uri(folder, "attempts", attempt_id)
    image = prepared[0]
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


def _result_record(
    job: Job,
    model: str,
    input_uris: Sequence[str],
    prepared: Sequence[PreparedImage],
    sent: Sequence[SentImage],
    parsed: TaskOutput,
    answer: ModelAnswer,
    artifacts: dict[str, str],
    attempt: int,
    attempt_id: str,
    timings_s: dict[str, float],
) -> dict[str, Any]:
    estimated = sum(estimate_image_tokens(*p.sent_width_height_px) for p in prepared)
    return {
        "schema_version": SCHEMA_VERSION,
        "job_id": job.job_id,
        "task": job.task,
        "status": "succeeded",
        "model": model,
        "model_version": answer.model_version,
        "images": [
            {
                "uri": uri,
                "sha256": p.sha256,
                "mime_type": p.mime_type,
                "width": p.width_px,
                "height": p.height_px,
                "transport": s.transport,
                # what the model saw, when a reduced copy was sent (segment)
                "sent_width": p.sent_width_height_px[0],
                "sent_height": p.sent_width_height_px[1],
            }
            for uri, p, s in zip(input_uris, prepared, sent, strict=True)
        ],
        "output": parsed.output,
        "artifacts": artifacts,
        "usage": {
            "prompt_tokens": answer.usage.prompt_tokens,
            "output_tokens": answer.usage.output_tokens,
            "total_tokens": answer.usage.total_tokens,
            "thoughts_tokens": answer.usage.thoughts_tokens,
            "estimated_image_tokens": estimated,
        },
        "warnings": [
            *(f"image {i}: {w}" for i, p in enumerate(prepared) for w in p.decoder_warnings),
            *parsed.warnings,
        ],
        # the worker's own time by stage in this attempt ("publish" is still running)
        "timings_ms": {k: round(v * 1000, 1) for k, v in timings_s.items()},
        "attempt": attempt,
        "attempt_id": attempt_id,
        "finish_reason": answer.finish_reason,
        "completed_at": _now_iso(),
    }


def publish_error(
    ports: Ports,
    *,
    job_id: str,
    task: str | None,
    output: str | None,
    error: GvwError,
    attempts: int,
    job: Any = None,
) -> Outcome:
    """Write error.json, unless a result (or an earlier error record) already stands."""
    settings = ports.settings
    try:
        check_output_allowed(output, settings)
    except GvwError:
        output = None  # a disallowed output is itself the error; record it in the default place
    folder = job_folder(job_id, output, settings)
    done = _finished(ports, job_id, folder)
    if done is not None:
        return done
    record = {
        "schema_version": SCHEMA_VERSION,
        "job_id": job_id,
        "task": task,
        "status": "failed",
        "error": error.to_record(),
        "attempts": attempts,
        "failed_at": _now_iso(),
    }
    uri = join_uri(folder, ERROR_NAME)
    ports.stores.create_exclusive(uri, _json_bytes(record), content_type=_JSON)
    # the dead-letter index: what `gvw dead-letters list | replay` reads
    DEAD_LETTERS.labels(error.code).inc()
    ports.deliveries.dead_letter(
        job_id, code=error.code, message=error.message, attempts=attempts, job=job
    )
    log.warning(
        "job failed", extra={"job_id": job_id, "code": error.code, "error_message": error.message}
    )
    return Outcome(job_id, "failed", uri)


def _delete_quietly(ports: Ports, uris: Sequence[str]) -> None:
    for uri in uris:
        try:
            ports.stores.delete(uri)
        except Exception:  # orphans are harmless: nothing references them
            log.debug("could not delete orphan artifact %s", uri, exc_info=True)


def _json_bytes(record: dict[str, Any]) -> bytes:
    return json.dumps(record, ensure_ascii=False, indent=2).encode() + b"\n"


def _now_iso() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")
