"""Client library for backend services: submit jobs, follow them, read their results.

    from worker.client import VisionClient
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
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

from tasks.errors import GvwError
from worker.jobs import new_job_id, parse_job
from worker.layout import ERROR_NAME, RESULT_NAME, error_uri, result_uri
from worker.producer import QUEUE, send_job, send_jobs
from worker.records import ErrorRecord, ResultRecord, read_record
from worker.settings import Settings, get_settings
from worker.storage import StoreRouter
from worker.storage.uris import Role, parse_uri

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

    @property
    def done(self) -> bool:
        return self.state in ("succeeded", "failed")


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

    def submit(self, job: dict[str, Any]) -> str:
        """Validate and enqueue one job; returns its job id (generated when absent).

        Refused here, before anything is sent, with the worker's own message: a job of
        the wrong shape (InvalidJob, naming the field), and URIs the worker would refuse
        (``http://...``, ``inbox/a.jpg``, ``s3://inbox`` with no key: InputNotAllowed or
        InvalidJob). Whether an input is inside the fleet's allowlist is the worker's to
        say: a producer need not share its settings."""
        data = dict(job)
        data.setdefault("job_id", new_job_id())
        parsed = parse_job(data)  # InvalidJob, naming the field, before anything is sent
        for index, uri in enumerate(parsed.images):
            _check_uri(uri, "input", f"images.{index}")
        if parsed.output is not None:
            _check_uri(parsed.output, "output", "output")
        return send_job(data, broker_url=self._broker_url)

    def submit_many(self, jobs: Sequence[dict[str, Any]]) -> list[str]:
        """Validate every job (as `submit` does), then send them together: pipelined in
        groups on a Redis broker. Nothing is sent when one is invalid."""
        ready = []
        for job in jobs:
            data = dict(job)
            data.setdefault("job_id", new_job_id())
            parsed = parse_job(data)
            for index, uri in enumerate(parsed.images):
                _check_uri(uri, "input", f"images.{index}")
            if parsed.output is not None:
                _check_uri(parsed.output, "output", "output")
            ready.append(data)
        send_jobs(ready, broker_url=self._broker_url)
        return [str(job["job_id"]) for job in ready]

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

    def result(self, job_id: str, *, output: str | None = None) -> dict[str, Any] | None:
        """result.json, or error.json for a failed job, as stored; None while there is
        neither."""
        found = self._stored(job_id, output)
        return dict(json.loads(found[1])) if found is not None else None

    def record(
        self, job_id: str, *, output: str | None = None
    ) -> ResultRecord | ErrorRecord | None:
        """The job's record, typed (`ResultRecord` or `ErrorRecord`); None while there is
        neither."""
        found = self._stored(job_id, output)
        return read_record(found[1]) if found is not None else None

    def _stored(self, job_id: str, output: str | None) -> tuple[str, bytes] | None:
        for uri in (
            result_uri(job_id, output, self._settings),
            error_uri(job_id, output, self._settings),
        ):
            if self._stores.exists(uri):
                return uri, self._stores.get_bytes(uri, max_bytes=_MAX_RECORD_BYTES)
        return None

    def status(self, job_id: str, *, output: str | None = None) -> JobStatus:
        """Succeeded or failed (from its record), else queued or running (from the broker,
        Redis), else batched (waiting for its Gemini batch), else unknown."""
        finished = self.finished(job_id, output=output)
        if finished is not None:
            return finished
        state = self._queue_state(job_id)
        if state == "unknown":
            batch = self._batch_of(job_id)
            if batch is not None:
                return JobStatus(job_id, "batched", batch=batch)
        return JobStatus(job_id, state)

    def _batch_of(self, job_id: str) -> str | None:
        """The batch a job in batch mode waits in, from the fleet's batch records
        (GVW_REDIS_URL); None when it waits for none, or that Redis is not reachable
        (status then says unknown, as it would without batch mode)."""
        import redis

        from worker.batch_store import BatchStore

        try:
            client = redis.Redis.from_url(
                self._settings.gvw_redis_url, socket_connect_timeout=3, socket_timeout=10
            )
            return BatchStore(client).waiting_in(job_id)
        except redis.RedisError:
            return None

    def finished(self, job_id: str, *, output: str | None = None) -> JobStatus | None:
        """The final state from storage alone (no broker round trip), or None."""
        for uri in (
            result_uri(job_id, output, self._settings),
            error_uri(job_id, output, self._settings),
        ):
            if self._stores.exists(uri):
                if uri.endswith("result.json"):
                    return JobStatus(job_id, "succeeded", uri)
                record = read_record(self._stores.get_bytes(uri, max_bytes=_MAX_RECORD_BYTES))
                code = record.error.code if isinstance(record, ErrorRecord) else None
                return JobStatus(job_id, "failed", uri, code)
        return None

    def wait(
        self, job_id: str, timeout_s: float = 600.0, *, output: str | None = None
    ) -> dict[str, Any]:
        """Poll until the job has its record (backing off to 2 s); TimeoutError past the
        timeout. A failed job returns its error.json: check `record["status"]`."""
        deadline = time.monotonic() + timeout_s
        pause_s = 0.2
        while True:
            record = self.result(job_id, output=output)
            if record is not None:
                return record
            if time.monotonic() >= deadline:
                raise TimeoutError(f"no result for {job_id} after {timeout_s:.0f} s")
            time.sleep(min(pause_s, max(0.0, deadline - time.monotonic())))
            pause_s = min(pause_s * 1.5, 2.0)

    def _queue_state(self, job_id: str) -> State:
        """Where the job's message is on a Redis broker: still in the queue (queued),
        delivered to a worker and not yet acknowledged (running, or a retry countdown
        held by a worker), or nowhere (unknown). Reads the broker's own keys (kombu's
        Redis transport: the queue lists and the ``unacked`` hash), boundedly; never
        the result backend."""
        if not self._broker_url.startswith(("redis://", "rediss://")):
            return "unknown"
        import redis

        needle = f'"id": "{job_id}"'.encode()
        try:
            broker = redis.Redis.from_url(
                self._broker_url, socket_connect_timeout=3, socket_timeout=10
            )
            for _, raw in broker.hscan_iter("unacked", count=1000):
                if needle in raw:
                    return "running"
            for queue in _queue_keys(broker):
                for start in range(0, _QUEUE_SCAN_MAX, 1000):
                    chunk = broker.lrange(queue, start, start + 999)
                    if any(needle in raw for raw in chunk):
                        return "queued"
                    if len(chunk) < 1000:
                        break
        except redis.RedisError as exc:
            from kombu.utils.url import maybe_sanitize_url

            from worker.producer import BrokerUnavailable

            raise BrokerUnavailable(
                f"cannot reach the broker at {maybe_sanitize_url(self._broker_url)} "
                f"({exc}): is it running, and is CELERY_BROKER_URL right?"
            ) from exc
        return "unknown"


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


def status(job_id: str, *, output: str | None = None) -> JobStatus:
    return _client().status(job_id, output=output)


def wait(job_id: str, timeout_s: float = 600.0, *, output: str | None = None) -> dict[str, Any]:
    return _client().wait(job_id, timeout_s, output=output)


def result(job_id: str, *, output: str | None = None) -> dict[str, Any] | None:
    return _client().result(job_id, output=output)
