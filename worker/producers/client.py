"""Client library for backend services: submit jobs, follow them, read their results.

    from worker.producers.client import VisionClient
    client = VisionClient()                      # CELERY_BROKER_URL, GVW_RESULTS_URI, ...
    job_id = client.submit({"task": "caption", "images": ["s3://inbox/a.jpg"]})
    record = client.wait(job_id, timeout_s=120)  # result.json (or error.json) as a dict

Light to import: Celery (to send), pydantic (to validate), and boto3 only when an s3://
result is first read; none of the worker's SDKs, image or numeric libraries. A job is
validated here exactly as the worker will validate it, so a bad job fails in the caller's
hands with a message naming the field, and the Celery task id is the job id.
"""

from __future__ import annotations

import json
import threading
import time
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any, Literal

from tasks.errors import FleetUnavailable, GvwError, JobIdConflict
from worker.contract.jobs import Job, new_job_id, parse_job
from worker.contract.layout import ERROR_NAME, RESULT_NAME, error_uri, job_folder, result_uri
from worker.contract.names import QUEUE
from worker.contract.records import ErrorRecord, ResultRecord, read_record
from worker.producers.producer import send_job, send_jobs
from worker.settings import Settings, get_settings
from worker.storage import StoreRouter
from worker.storage.uris import Role, parse_uri

if TYPE_CHECKING:
    from worker.runs.ledger import RunLedger
    from worker.runs.records import RunSummary

# succeeded / failed: its record exists; queued: waiting on the broker; running: taken by
# a worker (or waiting out a retry countdown there); batched: prepared in batch mode and
# waiting for its Gemini batch (GVW_REDIS_URL); unknown: none of these (never sent,
# already gone from a queue that is not Redis, or an id typed wrong)
State = Literal["succeeded", "failed", "queued", "running", "batched", "unknown"]
# queue entries scanned for a job id before answering "unknown" (each is one LRANGE
# of 1,000 messages): a bound on what `status` costs a very long queue
_QUEUE_SCAN_MAX = 200_000

_MAX_RECORD_BYTES = 64_000_000


@dataclass(frozen=True)
class JobStatus:
    job_id: str
    state: State
    uri: str | None = None  # result.json or error.json, once there is one
    error_code: str | None = None
    batch: str | None = None  # batched: the fleet's batch id ("" until one is assembled)
    # one line on what the fleet knows beyond the state: why a job failed, where its
    # record went, how long it has been queued or running
    detail: str | None = None
    # jobs refused because they were sent under this id while another job holds it
    refused: int = 0

    @property
    def done(self) -> bool:
        return self.state in ("succeeded", "failed")


class JobWaitTimeout(TimeoutError):
    """`wait` ran out of time; the message says what it saw (queued behind how many
    messages, whether any worker is taking jobs, since when a worker holds it)."""


@dataclass(frozen=True)
class _Sent:
    """A job as its producer sent it: what its records' fingerprints must match."""

    job: Job

    def matches(self, fingerprint: str | None, folder: str) -> bool:
        # a record older than fingerprints is taken as the job's own
        return fingerprint is None or fingerprint == self.job.fingerprint(folder)


@dataclass(frozen=True)
class _FleetView:
    """What GVW_REDIS_URL knows of one job id, read in one round trip."""

    claim_fingerprint: str | None
    claim_folder: str | None
    letter: dict[str, bytes]  # the dead-letter entry's fields (empty: none)
    refused: dict[str, bytes]  # fingerprint -> refused job's record
    taken_ago_s: float | None  # since a worker last took a job (None: never)


# seconds between two reads of what the fleet knows (dead letters, refusals, claims)
# while `wait` polls storage
_FLEET_CHECK_S = 2.0
# a fleet where no job was taken for this long is said to have no worker taking jobs
_IDLE_FLEET_S = 60.0
# jobs remembered per client for their fingerprints (`submit` -> `wait`)
_SENT_REMEMBERED = 10_000


class VisionClient:
    def __init__(
        self,
        *,
        broker_url: str | None = None,
        settings: Settings | None = None,
        stores: StoreRouter | None = None,
    ) -> None:
        self._settings = settings or get_settings()
        self._broker_url = broker_url or self._settings.celery_broker_url
        self._stores = stores or StoreRouter(
            connect_timeout_s=self._settings.gvw_s3_connect_timeout_s,
            read_timeout_s=self._settings.gvw_s3_read_timeout_s,
        )
        self._sent: OrderedDict[str, _Sent] = OrderedDict()
        self._sent_lock = threading.Lock()
        self._redis: Any = None

    def validate(self, job: dict[str, Any]) -> Job:
        """The job as the worker will read it, or InvalidJob / InputNotAllowed naming the
        field: what `submit` checks before sending, without sending."""
        data = dict(job)
        data.setdefault("job_id", new_job_id())
        parsed = parse_job(data)  # InvalidJob, naming the field, before anything is sent
        for index, uri in enumerate(parsed.images):
            _check_uri(uri, "input", f"images.{index}")
        if parsed.output is not None:
            _check_uri(parsed.output, "output", "output")
        return parsed

    def submit(self, job: dict[str, Any]) -> str:
        """Validate and enqueue one job; returns its job id (generated when absent).

        Refused here, before anything is sent, with the worker's own message: a job of
        the wrong shape (InvalidJob, naming the field), and URIs the worker would refuse
        (``http://...``, ``inbox/a.jpg``, ``s3://inbox`` with no key: InputNotAllowed or
        InvalidJob). Whether an input is inside the fleet's allowlist is the worker's to
        say: a producer need not share its settings. The client remembers what it sent,
        so that `wait`, `status` and `result` tell its job from another under the same id."""
        data = dict(job)
        data.setdefault("job_id", new_job_id())
        parsed = self.validate(data)
        job_id = send_job(data, broker_url=self._broker_url)
        self._remember(parsed)
        return job_id

    def submit_many(self, jobs: Sequence[dict[str, Any]]) -> list[str]:
        """Validate every job (as `submit` does), then send them together: pipelined in
        groups on a Redis broker. Nothing is sent when one is invalid."""
        ready = []
        parsed = []
        for job in jobs:
            data = dict(job)
            data.setdefault("job_id", new_job_id())
            parsed.append(self.validate(data))
            ready.append(data)
        send_jobs(ready, broker_url=self._broker_url)
        for one in parsed:
            self._remember(one)
        return [str(job["job_id"]) for job in ready]

    def _remember(self, parsed: Job) -> None:
        with self._sent_lock:  # a client is shared by a service's threads
            self._sent[parsed.job_id] = _Sent(parsed)
            self._sent.move_to_end(parsed.job_id)
            while len(self._sent) > _SENT_REMEMBERED:
                self._sent.popitem(last=False)

    def _sent_job(self, job_id: str, job: dict[str, Any] | None) -> _Sent | None:
        """The job the caller sent under this id: given, or sent by this client."""
        if job is not None:
            return _Sent(parse_job({**job, "job_id": job_id}))
        with self._sent_lock:
            return self._sent.get(job_id)

    @staticmethod
    def _folder_of(output: str | None, sent: _Sent | None) -> str | None:
        """Where to look: the caller's ``output``, else the sent job's own."""
        return output if output is not None else (sent.job.output if sent else None)

    def committed(self, *, output: str | None = None) -> dict[str, str]:
        """Every job with a record under the results base (`output`, else
        GVW_RESULTS_URI), from one listing of it: job id -> "succeeded" or "failed".
        A request per thousand keys, not one per job."""
        base = (output or self._settings.gvw_results_uri).rstrip("/") + "/"
        found: dict[str, str] = {}
        for uri in self._stores.list_prefix(base):
            job_id, _, name = uri[len(base) :].partition("/")
            if name == RESULT_NAME:
                found[job_id] = "succeeded"
            elif name == ERROR_NAME:
                found.setdefault(job_id, "failed")
        return found

    def result(
        self, job_id: str, *, output: str | None = None, job: dict[str, Any] | None = None
    ) -> dict[str, Any] | None:
        """result.json, or error.json for a failed job, as stored; None while there is
        neither. `JobIdConflict` (invalid_job) when the record is another job's: one this
        client sent under the id, or ``job``, differs from it."""
        found = self._owned_record(job_id, output, job)
        return dict(json.loads(found)) if found is not None else None

    def record(
        self, job_id: str, *, output: str | None = None, job: dict[str, Any] | None = None
    ) -> ResultRecord | ErrorRecord | None:
        """The job's record, typed (`ResultRecord` or `ErrorRecord`); None while there is
        neither."""
        found = self._owned_record(job_id, output, job)
        return read_record(found) if found is not None else None

    def _owned_record(
        self, job_id: str, output: str | None, job: dict[str, Any] | None
    ) -> bytes | None:
        """The record's bytes as stored, once they are the job's own (`JobIdConflict`
        when another job's); None while there is none."""
        sent = self._sent_job(job_id, job)
        output = self._folder_of(output, sent)
        found = self._stored(job_id, output)
        if found is None:
            return None
        self._check_owner(job_id, found, sent, output)
        return found[1]

    def _stored(self, job_id: str, output: str | None) -> tuple[str, bytes] | None:
        for uri in (
            result_uri(job_id, output, self._settings),
            error_uri(job_id, output, self._settings),
        ):
            if self._stores.exists(uri):
                return uri, self._stores.get_bytes(uri, max_bytes=_MAX_RECORD_BYTES)
        return None

    def _check_owner(
        self, job_id: str, found: tuple[str, bytes], sent: _Sent | None, output: str | None
    ) -> None:
        if sent is None:
            return
        fingerprint = read_record(found[1]).fingerprint
        if not sent.matches(fingerprint, job_folder(job_id, output, self._settings)):
            raise JobIdConflict(job_id)

    def status(
        self, job_id: str, *, output: str | None = None, job: dict[str, Any] | None = None
    ) -> JobStatus:
        """Succeeded or failed (from its record, or from the fleet's dead-letter index
        and refusals), else queued or running (from the broker, Redis), else batched
        (waiting for its Gemini batch), else unknown. A record of another job under the
        id (than the one this client sent, or ``job``) is this job's failure:
        ``invalid_job``, "job_id already used by a different job"."""
        sent = self._sent_job(job_id, job)
        output = self._folder_of(output, sent)
        fleet = self._fleet_view(job_id)
        refused = len(fleet.refused) if fleet else 0
        try:
            finished = self._finished(job_id, output, sent)
            if finished is None and fleet is not None:
                finished = self._known_to_fleet(job_id, output, sent, fleet)
        except JobIdConflict as err:
            return JobStatus(
                job_id, "failed", error_code=err.code, detail=err.message, refused=refused
            )
        if finished is not None:
            return replace(
                finished, refused=refused, detail=finished.detail or _refused_note(refused)
            )
        state, detail = self._queue_state(job_id, fleet)
        if state == "unknown":
            batch = self._batch_of(job_id)
            if batch is not None:
                return JobStatus(job_id, "batched", batch=batch, refused=refused)
            detail = self._unknown_detail(job_id, output, fleet)
        return JobStatus(job_id, state, detail=detail, refused=refused)

    def _batch_of(self, job_id: str) -> str | None:
        """The batch a job in batch mode waits in, from the fleet's batch records
        (GVW_REDIS_URL); None when it waits for none, or that Redis is not reachable
        (status then says unknown, as it would without batch mode)."""
        import redis

        from worker.fleet.batch_store import BatchStore

        try:
            client = self._fleet_redis()
            return BatchStore(client).waiting_in(job_id)
        except redis.RedisError:
            return None

    def run_status(self, run_id: str, *, output: str | None = None) -> RunSummary | None:
        """A run's progress (docs/runs.md): counts by state and error code, spend, rate
        and ETA, from the fleet's live counts (GVW_REDIS_URL), else from the run's last
        summary.json; None when neither knows the run. `output`: the results folder its
        jobs write to (default GVW_RESULTS_URI)."""
        from worker.producers.runs import run_summary
        from worker.runs.store import RunStore

        results = output or self._settings.gvw_results_uri
        return run_summary(run_id, results, self._run_ledger(), RunStore(self._stores))

    def seal_run(self, run_id: str, *, output: str | None = None) -> RunSummary | None:
        """Say a run has all its jobs (for runs a producer names on its own jobs): its
        last end then finishes it. `gvw enqueue-prefix` seals its runs itself."""
        from worker.producers.runs import seal_run
        from worker.runs.store import RunStore

        ledger = self._run_ledger()
        if ledger is None:
            raise FleetUnavailable("the fleet's Redis (GVW_REDIS_URL) does not answer")
        results = output or self._settings.gvw_results_uri
        return seal_run(ledger, RunStore(self._stores), run_id, results)

    def _run_ledger(self) -> RunLedger | None:
        from worker.producers.runs import fleet_ledger

        return fleet_ledger(self._settings.gvw_redis_url, ttl_s=self._settings.gvw_run_ttl_s)

    def finished(self, job_id: str, *, output: str | None = None) -> JobStatus | None:
        """The final state from storage alone (no broker round trip), or None."""
        return self._finished(job_id, output, None)

    def _finished(self, job_id: str, output: str | None, sent: _Sent | None) -> JobStatus | None:
        for uri in (
            result_uri(job_id, output, self._settings),
            error_uri(job_id, output, self._settings),
        ):
            if not self._stores.exists(uri):
                continue
            data = self._stores.get_bytes(uri, max_bytes=_MAX_RECORD_BYTES)
            self._check_owner(job_id, (uri, data), sent, output)
            if uri.endswith(RESULT_NAME):
                return JobStatus(job_id, "succeeded", uri)
            record = read_record(data)
            code = record.error.code if isinstance(record, ErrorRecord) else None
            return JobStatus(job_id, "failed", uri, code)
        return None

    def wait(
        self,
        job_id: str,
        timeout_s: float = 600.0,
        *,
        output: str | None = None,
        job: dict[str, Any] | None = None,
    ) -> dict[str, Any]:
        """Poll until the job has its record (backing off to 2 s), and return it: a
        failed job returns its error.json (check `record["status"]`).

        What the fleet already knows ends the wait within seconds: a job that failed for
        good while its record could not be written (the dead-letter index keeps it) is
        returned from there; a job refused because another job holds its id, or whose
        id's record is another job's, raises `JobIdConflict` (invalid_job); a job whose
        records the workers write under another results folder raises `ResultsElsewhere`.
        Past the timeout, `JobWaitTimeout` (a TimeoutError) says what it saw."""
        sent = self._sent_job(job_id, job)
        output = self._folder_of(output, sent)
        deadline = time.monotonic() + timeout_s
        pause_s = 0.2
        fleet_read_at = float("-inf")
        while True:
            found = self._stored(job_id, output)
            if found is not None:
                self._check_owner(job_id, found, sent, output)
                return dict(json.loads(found[1]))
            if time.monotonic() - fleet_read_at >= _FLEET_CHECK_S:
                fleet_read_at = time.monotonic()
                fleet = self._fleet_view(job_id)
                if fleet is not None:
                    known = self._known_record(job_id, output, sent, fleet)
                    if known is not None:
                        return known
            if time.monotonic() >= deadline:
                raise JobWaitTimeout(
                    f"no record for {job_id} after {timeout_s:.0f} s: "
                    + self._describe_wait(job_id, output)
                )
            time.sleep(min(pause_s, max(0.0, deadline - time.monotonic())))
            pause_s = min(pause_s * 1.5, 2.0)

    # --- what the fleet (GVW_REDIS_URL) knows -----------------------------------------

    def _fleet_redis(self) -> Any:
        if self._redis is None:
            import redis

            self._redis = redis.Redis.from_url(
                self._settings.gvw_redis_url, socket_connect_timeout=3, socket_timeout=10
            )
        return self._redis

    def _fleet_view(self, job_id: str) -> _FleetView | None:
        """Claim, dead letter, refusals and the fleet's last take of a job, in one round
        trip; None when GVW_REDIS_URL does not answer (the caller then knows less)."""
        import redis

        from worker.fleet.dead_letters import dead_letter_key
        from worker.fleet.job_claims import TAKEN_AT_KEY, claim_key
        from worker.fleet.refusals import refused_key

        try:
            pipe = self._fleet_redis().pipeline(transaction=False)
            pipe.get(claim_key(job_id))
            pipe.hgetall(dead_letter_key(job_id))
            pipe.hgetall(refused_key(job_id))
            pipe.get(TAKEN_AT_KEY)
            pipe.time()
            claim, letter, refused, taken_at, (now_s, now_us) = pipe.execute()
        except redis.RedisError:
            return None
        fingerprint = folder = None
        if claim:
            fingerprint, _, folder = claim.decode().partition("|")
        return _FleetView(
            claim_fingerprint=fingerprint,
            claim_folder=folder,
            letter={_text(k): bytes(v) for k, v in (letter or {}).items()},
            refused={_text(k): bytes(v) for k, v in (refused or {}).items()},
            taken_ago_s=(now_s + now_us / 1e6 - float(taken_at)) if taken_at else None,
        )

    def _known_record(
        self, job_id: str, output: str | None, sent: _Sent | None, fleet: _FleetView
    ) -> dict[str, Any] | None:
        """The job's final record from the fleet, when storage does not hold it where
        this client looks: a refusal or a conflict raises, a dead letter whose record
        storage refused is returned, records in another folder raise ResultsElsewhere."""
        own_folder = job_folder(job_id, output, self._settings)
        claimed_by_us = (
            sent is not None
            and fleet.claim_fingerprint is not None
            and fleet.claim_folder is not None
            and sent.matches(fleet.claim_fingerprint, fleet.claim_folder)
        )
        if sent is not None and not claimed_by_us:
            # (a refusal kept from before the id was free again is not this run's)
            for fingerprint in fleet.refused:
                if sent.matches(fingerprint, own_folder):
                    raise JobIdConflict(job_id)
            held_by_another = (
                fleet.claim_fingerprint is not None
                and fleet.claim_folder is not None
                and not sent.matches(fleet.claim_fingerprint, fleet.claim_folder)
            )
            if held_by_another:
                # the id is held by another job: this one is, or will be, refused
                raise JobIdConflict(job_id)
        pending = _pending_record(fleet, sent, own_folder)
        if pending is not None:
            return pending
        elsewhere = bool(fleet.claim_folder) and str(fleet.claim_folder).rstrip(
            "/"
        ) != own_folder.rstrip("/")
        if elsewhere and (
            sent is None or sent.matches(fleet.claim_fingerprint, str(fleet.claim_folder))
        ):
            failure = self._error_record_in(str(fleet.claim_folder), sent)
            if failure is not None:
                # failed where the workers keep records (an output they do not allow
                # sends its error there): the job's own final record
                return failure
            raise ResultsElsewhere(
                f"job {job_id}'s records go to {fleet.claim_folder}/ (the workers' results "
                f"folder), not {own_folder}/ where this client looks: give producers and "
                "workers the same GVW_RESULTS_URI, or name the job's output"
            )
        return None

    def _error_record_in(self, folder: str, sent: _Sent | None) -> dict[str, Any] | None:
        """The job's error.json in ``folder``, when it is there and the sent job's."""
        uri = folder.rstrip("/") + "/" + ERROR_NAME
        try:
            if not self._stores.exists(uri):
                return None
            data = self._stores.get_bytes(uri, max_bytes=_MAX_RECORD_BYTES)
        except GvwError:
            return None
        if sent is not None and not sent.matches(read_record(data).fingerprint, folder):
            return None
        return dict(json.loads(data))

    def _known_to_fleet(
        self, job_id: str, output: str | None, sent: _Sent | None, fleet: _FleetView
    ) -> JobStatus | None:
        try:
            record = self._known_record(job_id, output, sent, fleet)
        except ResultsElsewhere as err:
            return JobStatus(job_id, "unknown", detail=err.message)
        if record is None:
            return None
        found = record.get("error")
        error: dict[str, Any] = found if isinstance(found, dict) else {}
        return JobStatus(
            job_id,
            "failed",
            error_code=str(error.get("code")) if error.get("code") else None,
            detail=(
                f"{error.get('message', '')}; its error.json could not be written, the "
                "dead-letter index keeps it (gvw dead-letters list)"
            ),
        )

    def _unknown_detail(self, job_id: str, output: str | None, fleet: _FleetView | None) -> str:
        folder = job_folder(job_id, output, self._settings)
        if fleet is not None and fleet.claim_folder is not None:
            return (
                f"a worker took it, but no record is under {folder}/ yet; its claim names "
                f"{fleet.claim_folder}/"
            )
        return (
            f"no record under {folder}/, not on the broker's queue, not held by a worker: "
            "never sent to this broker (CELERY_BROKER_URL), or sent with another --output"
        )

    def _describe_wait(self, job_id: str, output: str | None) -> str:
        """What a wait that ran out of time saw, in one line."""
        fleet = self._fleet_view(job_id)
        try:
            state, detail = self._queue_state(job_id, fleet)
        except Exception as exc:  # the broker went away meanwhile: say so
            return f"the broker does not answer ({exc})"
        if state == "unknown":
            batch = self._batch_of(job_id)
            if batch is not None:
                return f"it waits for its Gemini batch {batch or '(not assembled yet)'}"
            return self._unknown_detail(job_id, output, fleet)
        return detail or state

    def _queue_state(self, job_id: str, fleet: _FleetView | None) -> tuple[State, str | None]:
        """Where the job's message is on a Redis broker: still in the queue (queued),
        delivered to a worker and not yet acknowledged (running, or a retry countdown
        held by a worker), or nowhere (unknown); with a line on how long and behind
        what. Reads the broker's own keys (kombu's Redis transport: the queue lists, the
        ``unacked`` hash and its ``unacked_index``), boundedly; never the result backend."""
        if not self._broker_url.startswith(("redis://", "rediss://")):
            return "unknown", None
        import redis

        needle = f'"id": "{job_id}"'.encode()
        try:
            broker = redis.Redis.from_url(
                self._broker_url, socket_connect_timeout=3, socket_timeout=10
            )
            for tag, raw in broker.hscan_iter("unacked", count=1000):
                if needle in raw:
                    delivered_at = broker.zscore("unacked_index", tag)
                    now_s, now_us = broker.time()
                    ago = (
                        f" {now_s + now_us / 1e6 - float(delivered_at):.0f} s ago"
                        if delivered_at
                        else ""
                    )
                    return "running", (
                        f"delivered to a worker{ago}, not finished yet (running, or waiting "
                        "to be retried there)"
                    )
            for queue in _queue_keys(broker):
                length = int(broker.llen(queue))
                for start in range(0, min(length, _QUEUE_SCAN_MAX), 1000):
                    chunk = broker.lrange(queue, start, start + 999)
                    for offset, raw in enumerate(chunk):
                        if needle in raw:
                            # kombu pushes on the left and takes from the right
                            ahead = length - 1 - (start + offset)
                            place = (
                                "next in line"
                                if ahead == 0
                                else f"behind {ahead} message{'s' if ahead > 1 else ''}"
                            )
                            return "queued", (
                                f"still queued {place} on `{QUEUE}`; " + _taking_note(fleet)
                            )
                    if len(chunk) < 1000:
                        break
        except redis.RedisError as exc:
            from kombu.utils.url import maybe_sanitize_url

            from worker.producers.producer import BrokerUnavailable

            raise BrokerUnavailable(
                f"cannot reach the broker at {maybe_sanitize_url(self._broker_url)} "
                f"({exc}): is it running, and is CELERY_BROKER_URL right?"
            ) from exc
        return "unknown", None


class ResultsElsewhere(GvwError):
    """The workers write this job's records under another results folder than the one
    the client reads: producer and workers disagree on GVW_RESULTS_URI."""

    code = "worker_misconfigured"


def _pending_record(
    fleet: _FleetView, sent: _Sent | None, own_folder: str
) -> dict[str, Any] | None:
    """A dead letter's record that storage did not take (``recorded`` 0), when it is
    this job's: it is final, the job will not run again."""
    letter = fleet.letter
    if letter.get("recorded") != b"0" or not letter.get("record"):
        return None
    fingerprint = letter.get("fingerprint", b"").decode() or None
    folder = fleet.claim_folder if fleet.claim_folder is not None else own_folder
    if sent is not None and not (
        sent.matches(fingerprint, folder) or sent.matches(fingerprint, own_folder)
    ):
        return None
    return dict(json.loads(letter["record"]))


def _taking_note(fleet: _FleetView | None) -> str:
    if fleet is None:
        return "GVW_REDIS_URL does not answer, so whether workers take jobs is not known"
    if fleet.taken_ago_s is None:
        return f"no worker has taken a job from `{QUEUE}` yet (is a worker running? gvw worker)"
    if fleet.taken_ago_s > _IDLE_FLEET_S:
        return (
            f"no worker has taken a job from `{QUEUE}` in the last {fleet.taken_ago_s:.0f} s "
            "(is a worker running? gvw worker)"
        )
    return f"a worker took a job {fleet.taken_ago_s:.0f} s ago"


def _refused_note(refused: int) -> str | None:
    if not refused:
        return None
    return (
        f"{refused} other job{'s' if refused > 1 else ''} sent under this id "
        f"{'were' if refused > 1 else 'was'} refused (gvw dead-letters list)"
    )


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _queue_keys(broker: Any) -> list[bytes]:
    """The `vision` queue's lists: kombu keeps one per priority step ("vision",
    "vision\x06\x163", ...)."""
    return [QUEUE.encode(), *sorted(broker.scan_iter(match=QUEUE + "\x06\x16*", count=1000))]


def _check_uri(uri: str, role: Role, where: str) -> None:
    try:
        parse_uri(uri, role=role)
    except GvwError as err:
        raise type(err)(f"invalid job: {where}: {err.message}") from err


_default: VisionClient | None = None


def _client() -> VisionClient:
    global _default
    if _default is None:
        _default = VisionClient()
    return _default


def submit(job: dict[str, Any]) -> str:
    return _client().submit(job)


def status(
    job_id: str, *, output: str | None = None, job: dict[str, Any] | None = None
) -> JobStatus:
    return _client().status(job_id, output=output, job=job)


def wait(
    job_id: str,
    timeout_s: float = 600.0,
    *,
    output: str | None = None,
    job: dict[str, Any] | None = None,
) -> dict[str, Any]:
    return _client().wait(job_id, timeout_s, output=output, job=job)


def result(
    job_id: str, *, output: str | None = None, job: dict[str, Any] | None = None
) -> dict[str, Any] | None:
    return _client().result(job_id, output=output, job=job)
