"""A job that failed for good: its record, written so that it is never lost.

The dead-letter entry (Redis) is written first, with the record in it; then error.json.
When storage refuses, `RecordNotWritten` sends the message back to write the kept record
later (`publish_pending_record`), never to run the job again. A job id that belongs to
another job (`JobIdConflict`) touches none of that job's records.
"""

from __future__ import annotations

import logging
from typing import Any

from tasks.errors import GvwError, JobIdConflict, RecordNotWritten, RetryableError
from worker.contract.jobs import Job, raw_fingerprint
from worker.contract.layout import ERROR_NAME, job_folder
from worker.contract.records import ErrorRecord, Outcome, error_record, shrink_for_redis
from worker.observability import DEAD_LETTERS
from worker.pipeline.ports import Ports
from worker.pipeline.record_store import JSON_TYPE, finished
from worker.settings import Settings
from worker.storage import join_uri
from worker.storage.uris import check_allowed

log = logging.getLogger(__name__)


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
    ports.dead_letters.dead_letter(
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
    data = ports.dead_letters.pending_record(job_id)
    if data is None:  # written meanwhile by another delivery
        letter = ports.dead_letters.get(job_id)
        return Outcome(
            job_id=job_id,
            status="failed",
            record_uri=join_uri(folder, ERROR_NAME),
            already_done=True,
            error_code=letter.code if letter is not None else None,
            fingerprint=letter.fingerprint if letter is not None else None,
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
        done = finished(ports.stores, job_id, folder, fingerprint)
        if done is not None:
            ports.dead_letters.mark_recorded(job_id)
            return done
        ports.stores.create_exclusive(uri, data, content_type=JSON_TYPE)
    except RetryableError as err:
        raise RecordNotWritten(
            f"could not write the error record {uri}: {err.message}", code=code
        ) from err
    except JobIdConflict:
        raise
    except GvwError as err:
        # storage refuses it for good (no such bucket, no permission): trying again
        # cannot help. The dead-letter entry keeps the record, where producers
        # (`worker.producers.client`) and `gvw dead-letters list` read it.
        log.error(
            "storage refused the error record for good; the dead-letter index keeps it",
            extra={"job_id": job_id, "code": code, "error_message": err.message},
        )
        DEAD_LETTERS.labels(code).inc()
        return Outcome(
            job_id=job_id, status="failed", record_uri="", error_code=code, fingerprint=fingerprint
        )
    ports.dead_letters.mark_recorded(job_id)
    DEAD_LETTERS.labels(code).inc()
    return Outcome(
        job_id=job_id, status="failed", record_uri=uri, error_code=code, fingerprint=fingerprint
    )


def _refuse_reused_id(
    ports: Ports, job_id: str, folder: str, error: JobIdConflict, record: ErrorRecord
) -> Outcome:
    log.warning(
        "job refused: job_id already used by a different job",
        extra={"job_id": job_id, "code": error.code},
    )
    data = record.to_json_bytes()
    try:
        # where the refused job's producer (`wait`, `gvw status`) and `gvw dead-letters
        # list` find it: the id's folder belongs to the other job
        ports.refusals.refuse(job_id, record.fingerprint or "", data)
    except Exception:
        log.warning(
            "could not keep the refusal for producers", extra={"job_id": job_id}, exc_info=True
        )
    uri = join_uri(folder, ERROR_NAME)
    ended = Outcome(
        job_id=job_id,
        status="failed",
        record_uri="",
        error_code=error.code,
        fingerprint=record.fingerprint,
    )
    if error.holder_folder is None or error.holder_folder == folder:
        # the id's folder is the other job's: nothing of ours may be written there
        return ended
    ports.stores.create_exclusive(uri, data, content_type=JSON_TYPE)
    return ended.model_copy(update={"record_uri": uri})


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
