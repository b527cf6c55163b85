"""The project's one exception tree.

It lives in the pure core because the core must be able to say "this job is invalid"
or "this model output is unreadable" without importing the runtime shell; the shell
(`worker/`) translates botocore, google-genai and Pillow errors into these classes at
its boundary, always ``raise ... from exc``.

    GvwError
    ├── PermanentError               never retried: error.json at once
    │   ├── InvalidJob               invalid_job
    │   │   └── JobIdConflict        invalid_job        (the id belongs to another job)
    │   ├── InputNotAllowed          input_not_allowed
    │   ├── InputNotFound            input_not_found
    │   ├── InvalidImage             invalid_image
    │   ├── TooLarge                 too_large
    │   ├── ModelBlocked             model_blocked      (safety block: a final answer)
    │   ├── ModelRejected            model_error        (4xx: the request as sent is wrong)
    │   │   ├── FileUriRejected      model_error        (403/404 on a File API URI: upload
    │   │   │                                            again once, then final)
    │   │   ├── FileNotActive        model_error        (400 FAILED_PRECONDITION: wait
    │   │   │                                            for ACTIVE once, then final)
    │   │   └── UrlNotFetched        model_error        (Gemini could not fetch an image
    │   │                                                URL: the bytes instead, once)
    │   ├── QuotaExhausted           quota_exhausted    (per-day quota: waiting, not retrying)
    │   ├── WorkerMisconfigured      worker_misconfigured (no or wrong storage credentials)
    │   └── WorkerLost               internal           (the job kept killing its worker)
    ├── ModelOutputInvalid           model_output_invalid, retried a bounded number of times
    ├── RunCapReached                quota_exhausted    (the run's cost cap: the job is held,
    │                                                    not failed, until the run resumes)
    └── RetryableError               retried with backoff, then error.json
        ├── ModelRateLimited         quota_exhausted    (429 per-minute: retry_after_s)
        ├── BudgetExhausted          quota_exhausted    (the fleet's day budget: a wait)
        ├── DependencyUnavailable    a service the job needs is down: a wait, bounded by
        │   │                        GVW_OUTAGE_MAX_WAIT_S, never a spent retry
        │   ├── ModelUnavailable     model_error        (500/502/503/504, no connection)
        │   ├── StorageUnavailable   internal           (S3 5xx, SlowDown, unreachable)
        │   └── FleetUnavailable     internal           (GVW_REDIS_URL unreachable)
        ├── ModelTimedOut            model_error        (Gemini answered too slowly: the
        │                                                job's own, retried, not waited for)
        ├── AttemptTimedOut          internal           (past the soft time limit)
        ├── JobBusy                  internal           (another worker holds the job)
        ├── RecordNotWritten         internal           (failed for good, but storage did
        │                                                not take error.json: written later)
        └── InternalError            internal           (a bug: retried, then recorded,
                                                         never silent)

This drawing is the tree's one picture: tests/unit/test_exception_tree.py checks it
against the classes below (names, parents, codes).

Each class carries its stable ``code`` (docs/contract.md's error codes) so the task decides
retry or failure from the type alone. Instances pickle cleanly (they cross Celery).
"""

from __future__ import annotations

from typing import Any, ClassVar


class GvwError(Exception):
    """Base of every error the worker reports. ``code`` is the contract's error code."""

    code: ClassVar[str] = "internal"
    retryable: ClassVar[bool] = False

    def __init__(self, message: str, **details: Any) -> None:
        super().__init__(message)
        self.message = message
        self.details: dict[str, Any] = details

    def __reduce__(self) -> tuple[Any, ...]:
        # keyword details would be lost by Exception's default pickling
        return (_rebuild, (type(self), self.message, self.details))

    def to_record(self) -> dict[str, Any]:
        """The `error` object of error.json."""
        record: dict[str, Any] = {
            "code": self.code,
            "message": self.message,
            "retryable": False,  # an error record is only written once retrying is over
        }
        record.update({k: v for k, v in self.details.items() if v is not None})
        return record


def _rebuild(cls: type[GvwError], message: str, details: dict[str, Any]) -> GvwError:
    err = cls.__new__(cls)
    GvwError.__init__(err, message, **details)
    return err


class PermanentError(GvwError):
    retryable = False


class InvalidJob(PermanentError):
    code = "invalid_job"


class JobIdConflict(InvalidJob):
    """The job id was first used by a different job (other images, prompt, output, ...).

    ``holder_folder`` is the results folder of the job that holds the id: the refused job
    never writes there, so it cannot read or spoil the first job's records.
    """

    def __init__(self, job_id: str, *, holder_folder: str | None = None) -> None:
        super().__init__(
            f"job_id already used by a different job ({job_id!r}): a job id is an "
            "idempotency key, so resend the same job under it, or use a new id",
            holder_folder=holder_folder,
        )

    @property
    def holder_folder(self) -> str | None:
        value = self.details.get("holder_folder")
        return value if isinstance(value, str) else None

    def to_record(self) -> dict[str, Any]:
        record = super().to_record()
        record.pop("holder_folder", None)  # another producer's folder is not ours to show
        return record


class InputNotAllowed(PermanentError):
    code = "input_not_allowed"


class InputNotFound(PermanentError):
    code = "input_not_found"


class InvalidImage(PermanentError):
    code = "invalid_image"


class TooLarge(PermanentError):
    code = "too_large"


class ModelBlocked(PermanentError):
    code = "model_blocked"


class ModelRejected(PermanentError):
    """A 4xx from Gemini (bad request, auth, unknown model): repeating it cannot help."""

    code = "model_error"


class FileUriRejected(ModelRejected):
    """Gemini refused a File API URI of the request: expired, deleted or another
    project's (403, not 404, is what the API answers). The pipeline uploads again once."""


class FileNotActive(ModelRejected):
    """A File API upload of the request is not ACTIVE yet (400 FAILED_PRECONDITION). The
    pipeline waits for it once."""


class UrlNotFetched(ModelRejected):
    """Gemini could not fetch an image's URL (expired, unreachable from Google, gone): the
    pipeline sends those images as bytes instead, once."""


class QuotaExhausted(PermanentError):
    code = "quota_exhausted"


class WorkerMisconfigured(PermanentError):
    """The worker's own deployment is wrong (no or rejected storage credentials): no
    retry can fix it, so the job fails at once with a message that says what to set;
    replay it once the deployment is fixed."""

    code = "worker_misconfigured"


class WorkerLost(PermanentError):
    """The job kept killing its worker: dead-lettered after GVW_MAX_DELIVERIES deliveries."""

    code = "internal"


class ModelOutputInvalid(GvwError):
    """The model answered, but not in a form we can read.

    Retried a bounded number of times (models are not deterministic), then final.
    ``raw_text`` is kept in error.json so a human can see what the model said.
    """

    code = "model_output_invalid"
    retryable = True

    def __init__(self, message: str, *, raw_text: str | None = None, **details: Any) -> None:
        super().__init__(message, raw_text=raw_text, **details)

    @property
    def raw_text(self) -> str | None:
        value = self.details.get("raw_text")
        return value if isinstance(value, str) else None


class RetryableError(GvwError):
    retryable = True


class ModelRateLimited(RetryableError):
    """429 RESOURCE_EXHAUSTED on a per-minute quota."""

    code = "quota_exhausted"

    def __init__(self, message: str, *, retry_after_s: float | None = None, **details: Any) -> None:
        super().__init__(message, retry_after_s=retry_after_s, **details)

    @property
    def retry_after_s(self) -> float | None:
        value = self.details.get("retry_after_s")
        return float(value) if value is not None else None


class RunCapReached(GvwError):
    """The run the job is counted in (its `max_usd`) has no room for this request: the job
    is held, neither retried nor failed, until `gvw runs resume` raises the cap."""

    code = "quota_exhausted"


class BudgetExhausted(RetryableError):
    """The fleet's day budget (GVW_BUDGET_USD_PER_DAY) has no room for this request: the
    job goes back to the queue and waits for room (a reservation settled below its
    estimate) or the next day's budget. Not a failure: it never uses up the job's retries."""

    code = "quota_exhausted"

    def __init__(self, message: str, *, retry_after_s: float, **details: Any) -> None:
        super().__init__(message, retry_after_s=retry_after_s, **details)


class DependencyUnavailable(RetryableError):
    """A service the job needs does not answer (Gemini, storage, the fleet's Redis): not
    the job's fault. The job waits for it, with capped backoff and without spending its
    retries, and ends with its real result once the service is back; only past
    GVW_OUTAGE_MAX_WAIT_S does it get a record saying what it waited for."""

    #: the service, in words, for logs and records
    dependency: ClassVar[str] = "a dependency"


class ModelUnavailable(DependencyUnavailable):
    code = "model_error"
    dependency = "Gemini"


class StorageUnavailable(DependencyUnavailable):
    code = "internal"
    dependency = "storage"


class FleetUnavailable(DependencyUnavailable):
    """The fleet's Redis (GVW_REDIS_URL: locks, claims, caches, counters) does not answer."""

    code = "internal"
    dependency = "the fleet's Redis (GVW_REDIS_URL)"


class ModelTimedOut(RetryableError):
    """Gemini took longer than GVW_GEMINI_TIMEOUT_S to answer: most often the request
    itself (a large image, a long thinking budget), so it is retried within the job's
    retries, not waited for as an outage."""

    code = "model_error"


class AttemptTimedOut(RetryableError):
    """The attempt ran past the soft time limit: tried again a bounded number of times."""

    code = "internal"


class JobBusy(RetryableError):
    """Another live worker holds this job's lock: come back shortly, when its result exists."""

    code = "internal"


class RecordNotWritten(RetryableError):
    """The job failed for good, its dead-letter entry holds the error record, but storage
    did not take error.json: the message waits for storage to write it (as for any
    outage, up to GVW_OUTAGE_MAX_WAIT_S), and never runs the job again meanwhile."""

    code = "internal"
    #: what it waits for (`worker.queue.outage_log` names it)
    dependency: ClassVar[str] = "storage"


class InternalError(RetryableError):
    """A bug or an unforeseen failure: retried like a transient error, then recorded."""

    code = "internal"
