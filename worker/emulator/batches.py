"""The Batch API as the SDK speaks it (`client.batches.create/get/list/cancel/delete`).

    POST   /v1beta/models/{model}:batchGenerateContent   {"batch": {"displayName", "inputConfig":
                                                          {"requests": {"requests": [...]}} or
                                                          {"fileName": "files/..."}}}
    GET    /v1beta/batches/{id}                           the batch as a long-running operation
    GET    /v1beta/batches?pageSize=&pageToken=           {"operations": [...], "nextPageToken"}
    POST   /v1beta/batches/{id}:cancel
    DELETE /v1beta/batches/{id}

A batch is PENDING when created, RUNNING from `batch_running_after_s`, and answered
`batch_done_after_s` after its creation (both settings of the emulator): each request is
answered by the same code as an interactive call (`EmulatorService.generate`), and the
answers are kept inline (`metadata.output.inlinedResponses`) for an inline batch, or in a
JSONL result file (`metadata.output.responsesFile`, downloaded with
`files/{id}:download?alt=media`) for a file batch, one `{"key", "response"}` or
`{"key", "error"}` line per request. Faults: `batch_request` (that many requests of the
next batch fail with a 500 status of their own), `batch_failed` and `batch_expired` (the
next batch ends in that state, with no answers), `batch_bad_line` (that many lines of the
next file batch's result file are cut mid-way).

Answers are computed when a client first looks after the batch is due, not on a timer, so
nothing runs in the background and a test decides when time has passed.
"""

from __future__ import annotations

import json
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from worker.emulator import errors
from worker.emulator.protocol import rfc3339_from_ns

# what a batch request may hold, as the API says (inline: 20 MB in all)
MAX_INLINE_BATCH_BYTES = 20 * 1024 * 1024
_METADATA_TYPE = "type.googleapis.com/google.ai.generativelanguage.v1main.GenerateContentBatch"

# (model, request body) -> (response body, HTTP status)
Answer = Callable[[str, dict[str, Any]], tuple[dict[str, Any], int]]


@dataclass
class Batch:
    name: str
    model: str
    display_name: str
    created_ns: int
    requests: list[tuple[str | None, dict[str, Any], Any]]  # (key, request, metadata)
    from_file: bool
    state: str = "BATCH_STATE_PENDING"
    updated_ns: int = 0
    ended_ns: int | None = None
    # answers, in request order: ("response", body) or ("error", status)
    results: list[tuple[str, dict[str, Any]]] = field(default_factory=list)
    result_file: str | None = None
    failed_requests: int = 0
    fail_outcome: str | None = None  # BATCH_STATE_FAILED / _EXPIRED from a fault
    # this many lines of the result file are written broken (a `batch_bad_line` fault)
    broken_lines: int = 0


class BatchStore:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._batches: dict[str, Batch] = {}
        self._order: list[str] = []

    def reset(self) -> None:
        with self._lock:
            self._batches.clear()
            self._order.clear()

    def create(
        self,
        model: str,
        body: Any,
        *,
        read_file: Callable[[str], bytes],
        failing_requests: int,
        fail_outcome: str | None,
        inline_max_bytes: int = MAX_INLINE_BATCH_BYTES,
        broken_lines: int = 0,
    ) -> Batch:
        if not isinstance(body, dict) or not isinstance(body.get("batch"), dict):
            raise errors.invalid_argument("* BatchGenerateContentRequest.batch: missing")
        batch_body = body["batch"]
        source = batch_body.get("inputConfig") or batch_body.get("input_config") or {}
        requests: list[tuple[str | None, dict[str, Any], Any]] = []
        from_file = False
        inline = (source.get("requests") or {}).get("requests")
        file_name = source.get("fileName") or source.get("file_name")
        if inline is not None:
            if len(json.dumps(body)) > inline_max_bytes:
                raise errors.invalid_argument(
                    f"Inline batch requests exceed the limit of {inline_max_bytes} bytes; "
                    "use a file."
                )
            for item in inline:
                request = item.get("request") if isinstance(item, dict) else None
                if not isinstance(request, dict):
                    raise errors.invalid_argument("* batch.inputConfig.requests: bad request")
                metadata = item.get("metadata")
                key = metadata.get("key") if isinstance(metadata, dict) else None
                requests.append((key, request, metadata))
        elif isinstance(file_name, str):
            from_file = True
            for number, line in enumerate(read_file(file_name).splitlines(), 1):
                if not line.strip():
                    continue
                try:
                    entry = json.loads(line)
                except ValueError as exc:
                    raise errors.invalid_argument(f"Invalid JSON on line {number}.") from exc
                if not isinstance(entry, dict) or not isinstance(entry.get("request"), dict):
                    raise errors.invalid_argument(f"Line {number} has no request.")
                requests.append((str(entry.get("key", number)), entry["request"], None))
        else:
            raise errors.invalid_argument("* batch.inputConfig: give requests or a fileName")
        if not requests:
            raise errors.invalid_argument("* batch.inputConfig: no requests")
        now = time.time_ns()
        batch = Batch(
            name=f"batches/{uuid.uuid4().hex[:20]}",
            model=model,
            display_name=str(batch_body.get("displayName") or ""),
            created_ns=now,
            updated_ns=now,
            requests=requests,
            from_file=from_file,
            failed_requests=failing_requests,
            fail_outcome=fail_outcome,
            broken_lines=broken_lines,
        )
        with self._lock:
            self._batches[batch.name] = batch
            self._order.append(batch.name)
        return batch

    def get(self, name: str) -> Batch:
        with self._lock:
            batch = self._batches.get(name)
        if batch is None:
            raise errors.batch_not_found(name)
        return batch

    def page(self, page_size: int, page_token: str | None) -> tuple[list[Batch], str | None]:
        with self._lock:
            names = list(reversed(self._order))  # newest first
            start = int(page_token) if page_token and page_token.isdigit() else 0
            chosen = [self._batches[n] for n in names[start : start + page_size]]
        following = start + page_size
        return chosen, (str(following) if following < len(names) else None)

    def cancel(self, name: str) -> Batch:
        batch = self.get(name)
        with self._lock:
            if batch.state in ("BATCH_STATE_PENDING", "BATCH_STATE_RUNNING"):
                batch.state = "BATCH_STATE_CANCELLED"
                batch.ended_ns = batch.updated_ns = time.time_ns()
        return batch

    def delete(self, name: str) -> None:
        self.get(name)
        with self._lock:
            self._batches.pop(name, None)
            self._order.remove(name)

    def advance(
        self,
        batch: Batch,
        *,
        running_after_s: float,
        done_after_s: float,
        answer: Answer,
        store_result_file: Callable[[bytes], str],
    ) -> None:
        """Move the batch on to where its clock says it is; answer it when it is due."""
        now = time.time_ns()
        age_s = (now - batch.created_ns) / 1e9
        with self._lock:
            if batch.state not in ("BATCH_STATE_PENDING", "BATCH_STATE_RUNNING"):
                return
            if age_s < running_after_s:
                return
            if age_s < done_after_s:
                if batch.state == "BATCH_STATE_PENDING":
                    batch.state, batch.updated_ns = "BATCH_STATE_RUNNING", now
                return
            # due: claim it (another thread looking now sees it RUNNING with no results)
            if batch.results or batch.ended_ns is not None:
                return
            batch.ended_ns = now
        if batch.fail_outcome is not None:
            with self._lock:
                batch.state, batch.updated_ns = batch.fail_outcome, time.time_ns()
            return
        results: list[tuple[str, dict[str, Any]]] = []
        for index, (_key, request, _metadata) in enumerate(batch.requests):
            if index < batch.failed_requests:
                results.append(("error", _status(500, "INTERNAL", "Internal error.")))
                continue
            body, status = answer(batch.model, request)
            if status == 200:
                results.append(("response", body))
            else:
                error = body.get("error", {}) if isinstance(body, dict) else {}
                results.append(
                    ("error", _status(status, error.get("status"), error.get("message")))
                )
        result_file = None
        if batch.from_file:
            lines = []
            for index, ((key, _request, _metadata), (kind, value)) in enumerate(
                zip(batch.requests, results, strict=True)
            ):
                line = json.dumps({"key": key, kind: value})
                if index < batch.broken_lines:
                    line = line[: len(line) // 2]  # cut mid-way: not JSON any more
                lines.append(line)
            result_file = store_result_file(("\n".join(lines) + "\n").encode())
        with self._lock:
            batch.results = results
            batch.result_file = result_file
            batch.state, batch.updated_ns = "BATCH_STATE_SUCCEEDED", time.time_ns()


def _status(code: int, status: Any, message: Any) -> dict[str, Any]:
    return {"code": code, "status": str(status or "UNKNOWN"), "message": str(message or "")}


def operation_json(batch: Batch) -> dict[str, Any]:
    """The batch as `batches.get` returns it: a long-running operation whose metadata is
    the batch (the SDK reads `metadata.state`, `metadata.output`, ...)."""
    total = len(batch.requests)
    failed = sum(1 for kind, _ in batch.results if kind == "error")
    succeeded = len(batch.results) - failed
    metadata: dict[str, Any] = {
        "@type": _METADATA_TYPE,
        "model": f"models/{batch.model}",
        "displayName": batch.display_name,
        "createTime": rfc3339_from_ns(batch.created_ns),
        "updateTime": rfc3339_from_ns(batch.updated_ns),
        "state": batch.state,
        "batchStats": {
            "requestCount": str(total),
            "successfulRequestCount": str(succeeded),
            "failedRequestCount": str(failed),
            "pendingRequestCount": str(total - len(batch.results)),
        },
    }
    if batch.ended_ns is not None and batch.state != "BATCH_STATE_RUNNING":
        metadata["endTime"] = rfc3339_from_ns(batch.ended_ns)
    if batch.state == "BATCH_STATE_SUCCEEDED":
        if batch.result_file is not None:
            metadata["output"] = {"responsesFile": batch.result_file}
        else:
            metadata["output"] = {
                "inlinedResponses": {
                    "inlinedResponses": [
                        {kind: value, **({"metadata": meta} if meta is not None else {})}
                        for (_key, _request, meta), (kind, value) in zip(
                            batch.requests, batch.results, strict=True
                        )
                    ]
                }
            }
    done = batch.state not in ("BATCH_STATE_PENDING", "BATCH_STATE_RUNNING")
    operation: dict[str, Any] = {"name": batch.name, "metadata": metadata, "done": done}
    if done:
        operation["response"] = {"@type": _METADATA_TYPE, **metadata}
    return operation
