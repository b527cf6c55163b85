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
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from worker.client import VisionClient
from worker.progress import Progress
from worker.storage import ObjectInfo

_SLUG_CHARS = re.compile(r"[^A-Za-z0-9._-]+")


def deterministic_job_id(uri: str, version: str, template: Mapping[str, Any]) -> str:
    """`{slug}-{digest}`: a readable tail of the key and a 32-hex digest of the object's
    identity (URI and version or ETag) and the job template; within the contract's
    `[A-Za-z0-9][A-Za-z0-9._-]{0,127}`."""
    material = json.dumps({"uri": uri, "version": version, "job": template}, sort_keys=True)
    digest = hashlib.sha256(material.encode()).hexdigest()[:32]
    tail = _SLUG_CHARS.sub("-", uri.rsplit("/", 1)[-1]).strip("-._")[:48]
    return f"{tail}-{digest}" if tail else f"obj-{digest}"


@dataclass
class BulkSummary:
    listed: int = 0
    submitted: list[str] = field(default_factory=list)
    skipped_done: int = 0
    succeeded: int = 0
    failed_by_code: Counter[str] = field(default_factory=Counter)
    pending: int = 0

    def lines(self) -> list[str]:
        out = [
            f"listed {self.listed}, submitted {len(self.submitted)}, "
            f"skipped as done {self.skipped_done}"
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


def enqueue_prefix(
    client: VisionClient,
    objects: Iterable[ObjectInfo],
    template: Mapping[str, Any],
    *,
    suffixes: tuple[str, ...] = (),
    progress: Callable[[str, int], Progress] | None = None,
) -> BulkSummary:
    """Submit one job per object (filtered by suffix), skipping ids already done."""
    chosen = [o for o in objects if not suffixes or o.uri.lower().endswith(suffixes)]
    summary = BulkSummary(listed=len(chosen))
    bar = progress("enqueue", len(chosen)) if progress else None
    for index, obj in enumerate(chosen, start=1):
        job_id = deterministic_job_id(obj.uri, obj.etag, template)
        if client.finished(job_id, output=template.get("output")) is not None:
            summary.skipped_done += 1
        else:
            client.submit({**template, "images": [obj.uri], "job_id": job_id})
            summary.submitted.append(job_id)
        if bar:
            bar.update(index)
    if bar:
        bar.close()
    return summary


def wait_all(
    client: VisionClient,
    summary: BulkSummary,
    *,
    output: str | None,
    timeout_s: float,
    progress: Callable[[str, int], Progress] | None = None,
) -> BulkSummary:
    """Wait for every submitted job's record; fill in successes and failures by code."""
    pending = list(summary.submitted)
    bar = progress("wait", len(pending)) if progress else None
    deadline = time.monotonic() + timeout_s
    finished = 0
    pause_s = 0.2
    while pending and time.monotonic() < deadline:
        still: list[str] = []
        for job_id in pending:
            status = client.finished(job_id, output=output)
            if status is None:
                still.append(job_id)
                continue
            if status.state == "succeeded":
                summary.succeeded += 1
            else:
                summary.failed_by_code[status.error_code or "unknown"] += 1
            finished += 1
        pending = still
        if bar:
            bar.update(finished)
        if pending:
            time.sleep(pause_s)
            pause_s = min(pause_s * 1.5, 2.0)
    if bar:
        bar.close()
    summary.pending = len(pending)
    return summary
