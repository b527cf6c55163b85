"""`gvw enqueue-prefix`: one job per object under a prefix, safe to run again.

Each job's id is derived from the bucket, the key, the object's ETag and the job
options, so a second run finds the ids it already committed and skips them, a changed
object (new ETag) or changed options get a new job, and nothing is paid for twice.
"""

from __future__ import annotations

import hashlib
import json
import re
import time
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

from tasks.errors import GvwError, InputNotAllowed
from worker.producers.client import VisionClient
from worker.producers.progress import Progress
from worker.producers.runs import RunWriter
from worker.runs.ledger import failed_state
from worker.runs.records import Member
from worker.settings import Settings
from worker.storage import ObjectInfo
from worker.storage.uris import is_within, parse_prefix, parse_uri

_SLUG_CHARS = re.compile(r"[^A-Za-z0-9._-]+")

# the endings of the image types the worker reads (worker.images.prepare types them by their
# bytes; a listing has only names): what `gvw enqueue-prefix` takes unless told otherwise
IMAGE_SUFFIXES: tuple[str, ...] = (
    ".jpg",
    ".jpeg",
    ".png",
    ".webp",
    ".heic",
    ".heif",
    ".gif",
    ".bmp",
    ".tif",
    ".tiff",
)


def check_prefix(prefix: str, settings: Settings) -> str:
    """The prefix to list, parsed, or the error every one of its jobs would meet: a
    prefix no GVW_ALLOWED_INPUTS entry reaches is ``input_not_allowed`` before a single
    object is listed (the operator running a backfill has the fleet's settings)."""
    parsed = parse_prefix(prefix)
    allowed = [parse_prefix(p) for p in settings.allowed_input_prefixes]
    if not any(is_within(parsed, entry) or is_within(entry, parsed) for entry in allowed):
        raise InputNotAllowed(
            f"{prefix} is outside the inputs the workers may read (GVW_ALLOWED_INPUTS: "
            f"{', '.join(settings.allowed_input_prefixes) or 'none'})"
        )
    return parsed.text


def job_objects(
    objects: Iterable[ObjectInfo],
    *,
    suffixes: tuple[str, ...],
    results_folder: str | None = None,
    allowed_inputs: tuple[str, ...] = (),
    unusable: list[str] | None = None,
) -> Iterator[ObjectInfo]:
    """The listed objects a job is made for: keys with one of ``suffixes`` (all when
    empty), outside the results folder (a prefix holding it would otherwise send its own
    records as images), inside ``allowed_inputs`` where given. A key no job may name
    (``..`` segments, say: the worker would refuse it) is left out, and its URI added
    to ``unusable``, rather than refusing the whole run."""
    results = parse_prefix(results_folder.rstrip("/") + "/") if results_folder else None
    allowed = [parse_prefix(p) for p in allowed_inputs]
    for obj in objects:
        if suffixes and not obj.uri.lower().endswith(suffixes):
            continue
        try:
            parsed = parse_uri(obj.uri, role="input")
        except GvwError:
            if unusable is not None:
                unusable.append(obj.uri)
            continue
        if results is not None and is_within(parsed, results):
            continue
        if allowed and not any(is_within(parsed, entry) for entry in allowed):
            continue
        yield obj


def deterministic_job_id(uri: str, version: str, template: Mapping[str, Any]) -> str:
    """`{slug}-{digest}`: a readable tail of the key and a 32-hex digest of the object's
    identity (URI and version or ETag) and the job template; within the contract's
    `[A-Za-z0-9][A-Za-z0-9._-]{0,127}`."""
    # how the jobs are asked (interactive or batch) is not part of what they are: a rerun
    # in the other mode finds what the first run committed
    job = dict(template)
    if isinstance(job.get("options"), dict):
        options = {k: v for k, v in job["options"].items() if k != "mode"}
        job["options"] = options
        if not options:
            del job["options"]
    material = json.dumps({"uri": uri, "version": version, "job": job}, sort_keys=True)
    digest = hashlib.sha256(material.encode()).hexdigest()[:32]
    tail = _SLUG_CHARS.sub("-", uri.rsplit("/", 1)[-1]).strip("-._")[:48]
    return f"{tail}-{digest}" if tail else f"obj-{digest}"


@dataclass
class BulkSummary:
    listed: int = 0
    submitted: list[str] = field(default_factory=list)
    skipped_done: int = 0
    skipped_queued: int = 0  # sent by an earlier run that did not finish: still queued
    succeeded: int = 0
    failed_by_code: Counter[str] = field(default_factory=Counter)
    pending: int = 0

    def lines(self) -> list[str]:
        out = [
            f"listed {self.listed}, submitted {len(self.submitted)}, "
            f"skipped as done {self.skipped_done}"
            + (f", already queued {self.skipped_queued}" if self.skipped_queued else "")
        ]
        if self.succeeded or self.failed_by_code or self.pending:
            failed = sum(self.failed_by_code.values())
            codes = ", ".join(f"{c}={n}" for c, n in sorted(self.failed_by_code.items()))
            out.append(
                f"succeeded {self.succeeded}, failed {failed}"
                + (f" ({codes})" if codes else "")
                + (f", still pending {self.pending}" if self.pending else "")
            )
        return out


class SentLog(Protocol):
    """Which job ids of a bulk run were sent already (`RedisSentLog`): a rerun after an
    interruption skips them instead of queueing them twice, and continues the run the
    interrupted one left open (unsealed)."""

    def seen(self, job_ids: Sequence[str]) -> list[bool]: ...
    def add(self, job_ids: Sequence[str]) -> None: ...
    def open_run(self) -> str | None: ...
    def set_open_run(self, run_id: str | None) -> None: ...


class RedisSentLog:
    """One Redis set per bulk run (prefix, job template and results folder), kept for
    `ttl_s`; one round trip per group of ids."""

    def __init__(self, client: Any, run_key: str, *, ttl_s: int) -> None:
        self._redis = client
        self._key = f"gvw:bulk:sent:{run_key}"
        self._open_key = f"gvw:bulk:open:{run_key}"
        self._ttl_s = ttl_s

    def seen(self, job_ids: Sequence[str]) -> list[bool]:
        if not job_ids:
            return []
        return [bool(v) for v in self._redis.smismember(self._key, list(job_ids))]

    def add(self, job_ids: Sequence[str]) -> None:
        if job_ids:
            pipe = self._redis.pipeline(transaction=False)
            pipe.sadd(self._key, *job_ids)
            pipe.expire(self._key, self._ttl_s)
            pipe.execute()

    def open_run(self) -> str | None:
        """The run an interrupted enqueue of this listing left unsealed, if any."""
        found = self._redis.get(self._open_key)
        return found.decode() if isinstance(found, bytes) else found

    def set_open_run(self, run_id: str | None) -> None:
        if run_id is None:
            self._redis.delete(self._open_key)
        else:
            self._redis.set(self._open_key, run_id, ex=self._ttl_s)


def run_key(prefix: str, template: Mapping[str, Any]) -> str:
    material = json.dumps({"prefix": prefix, "job": template}, sort_keys=True)
    return hashlib.sha256(material.encode()).hexdigest()[:32]


def enqueue_prefix(
    client: VisionClient,
    objects: Iterable[ObjectInfo],
    template: Mapping[str, Any],
    *,
    suffixes: tuple[str, ...] = (),
    progress: Callable[[str, int], Progress] | None = None,
    sent: SentLog | None = None,
    group_size: int = 500,
    run: RunWriter | None = None,
) -> BulkSummary:
    """Submit one job per object (filtered by suffix), skipping what is done.

    What is done comes from one listing of the results folder (a request per thousand
    records), not a request per object; what an earlier, interrupted run already sent
    from `sent`. Jobs go in pipelined groups of `group_size` (`VisionClient.submit_many`).
    With `run`, every job sent names it, and it counts what was done before among its
    members (with their states); it is sealed at the end.
    """
    chosen = [o for o in objects if not suffixes or o.uri.lower().endswith(suffixes)]
    summary = BulkSummary(listed=len(chosen))
    output = template.get("output")
    done = client.committed(output=output)
    bar = progress("enqueue", len(chosen)) if progress else None
    group: list[dict[str, Any]] = []
    done_group: list[Member] = []

    def flush() -> None:
        ids = [str(job["job_id"]) for job in group]
        already = sent.seen(ids) if sent is not None else [False] * len(ids)
        fresh = [job for job, was in zip(group, already, strict=True) if not was]
        summary.skipped_queued += len(group) - len(fresh)
        if run is not None:
            run.sending([_member(job, "sent") for job in fresh])
        summary.submitted.extend(client.submit_many(fresh))
        if sent is not None:
            sent.add([str(job["job_id"]) for job in fresh])
        group.clear()
        if run is not None and done_group:
            run.ended_before(done_group, _ended_states(client, done_group, done, output))
        done_group.clear()
        if run is not None:
            # the members so far in storage: an interrupted enqueue loses none of them
            run.flush()

    for index, obj in enumerate(chosen, start=1):
        job_id = deterministic_job_id(obj.uri, obj.etag, template)
        if job_id in done:
            summary.skipped_done += 1
            if run is not None:
                done_group.append(Member(job_id=job_id, images=[obj.uri], sent="done"))
        else:
            job = {**template, "images": [obj.uri], "job_id": job_id}
            if run is not None:
                job["run"] = run.run_id
            group.append(job)
            if len(group) >= group_size:
                flush()
        if bar and (index % group_size == 0 or index == len(chosen)):
            bar.update(index)
    flush()
    if bar:
        bar.close()
    return summary


def _member(job: Mapping[str, Any], sent: Literal["sent", "done", "queued"]) -> Member:
    return Member(job_id=str(job["job_id"]), images=list(job["images"]), sent=sent)


def _ended_states(
    client: VisionClient, members: Sequence[Member], done: Mapping[str, str], output: Any
) -> dict[str, str]:
    """The ledger states of jobs committed before the run: a failure's code is read from
    its record (failures only: a request each)."""
    states = {}
    for member in members:
        if done[member.job_id] == "succeeded":
            states[member.job_id] = "s"
            continue
        status = client.finished(member.job_id, output=output)
        states[member.job_id] = failed_state((status.error_code if status else None) or "unknown")
    return states


def wait_all(
    client: VisionClient,
    summary: BulkSummary,
    *,
    output: str | None,
    timeout_s: float,
    progress: Callable[[str, int], Progress] | None = None,
) -> BulkSummary:
    """Wait for every submitted job's record, following progress by listing the results
    folder (not by asking after each job); then read the error code of each failure."""
    pending = set(summary.submitted)
    bar = progress("wait", len(pending)) if progress else None
    deadline = time.monotonic() + timeout_s
    pause_s = 0.5
    finished: dict[str, str] = {}
    while pending and time.monotonic() < deadline:
        started = time.monotonic()
        committed = client.committed(output=output)
        for job_id in [j for j in pending if j in committed]:
            finished[job_id] = committed[job_id]
            pending.discard(job_id)
        if bar:
            bar.update(len(finished))
        if pending:
            # a listing of a large folder takes a while: look less often than it takes
            listing_s = time.monotonic() - started
            time.sleep(min(max(pause_s, 5 * listing_s), max(0.0, deadline - time.monotonic())))
            pause_s = min(pause_s * 1.5, 10.0)
    if bar:
        bar.close()
    for job_id, state in finished.items():
        if state == "succeeded":
            summary.succeeded += 1
            continue
        status = client.finished(job_id, output=output)  # failures only: their codes
        summary.failed_by_code[(status.error_code if status else None) or "unknown"] += 1
    summary.pending = len(pending)
    return summary
