"""A job's records in its folder: is there one yet, and whose is it."""

from __future__ import annotations

from typing import Final

from tasks.errors import JobIdConflict
from worker.contract.layout import ERROR_NAME, RESULT_NAME
from worker.contract.records import ErrorRecord, Outcome, ResultRecord, read_record
from worker.storage import join_uri
from worker.storage.port import Stores

JSON_TYPE: Final = "application/json"
# A record is read back only to see whose it is (its fingerprint); none is near this.
RECORD_READ_MAX_BYTES: Final = 64_000_000


def finished(stores: Stores, job_id: str, folder: str, fingerprint: str) -> Outcome | None:
    result_uri = join_uri(folder, RESULT_NAME)
    error_uri = join_uri(folder, ERROR_NAME)
    # both at once: almost every job is new, and then both lookups must be made
    has_result, has_error = stores.exists_each([result_uri, error_uri])
    if not (has_result or has_error):
        return None
    uri = result_uri if has_result else error_uri
    # the records say which job they belong to: another job under the same id (in the
    # same folder) must not pass for this one, nor read them
    record = read_record(stores.get_bytes(uri, max_bytes=RECORD_READ_MAX_BYTES))
    owner = record.fingerprint
    if owner is not None and owner != fingerprint:  # records older than fingerprints: ours
        raise JobIdConflict(job_id, holder_folder=folder)
    # what the job's completion event says, read from the record: a redelivery emits
    # the same event the first run did (or would have, had the fleet's Redis answered)
    return Outcome(
        job_id=job_id,
        status="succeeded" if has_result else "failed",
        record_uri=uri,
        already_done=True,
        cost_usd=record.usage.cost_usd if isinstance(record, ResultRecord) else None,
        error_code=record.error.code if isinstance(record, ErrorRecord) else None,
        fingerprint=fingerprint,
    )
