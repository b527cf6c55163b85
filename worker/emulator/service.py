"""The emulator's behaviour behind the HTTP layer: one object holding the files, the fault
queue, the counters and the configuration, with one method per endpoint."""

from __future__ import annotations

import hashlib
import json
import threading
import time
import urllib.error
import urllib.request
from collections import OrderedDict
from collections.abc import Mapping
from typing import Any

from worker.emulator import errors
from worker.emulator.answers import Question, compose_answer
from worker.emulator.batches import Batch, BatchStore, operation_json
from worker.emulator.config import EmulatorConfig
from worker.emulator.errors import ApiError
from worker.emulator.faults import Fault, FaultQueue
from worker.emulator.files import FileStore
from worker.emulator.generate import (
    GenerateRequest,
    empty_response,
    parse_generate_request,
    prompt_blocked_response,
    prompt_usage,
    safety_blocked_response,
    text_response,
)
from worker.emulator.protocol import Reply, field_value, json_reply
from worker.emulator.stats import Stats
from worker.emulator.tokens import text_tokens
from worker.emulator.vision import ImageAnalysis, UndecodableImage, analyse_image_bytes

# text a client cannot parse as JSON, whatever task it asked for
GARBAGE_TEXT = '```json\n[{"box_2d": [120, 45,, 300 "label": red}\n]] }}\n```'
# what a runaway or hostile answer can be: JSON nested past any parser's recursion
# limit, and a list far longer than was asked for
DEEP_JSON_TEXT = "[" * 100_000 + "]" * 100_000
MANY_ITEMS = 100_000
_ANALYSIS_CACHE_SIZE = 32
# a URL in file_data is fetched within this, as the API does during the request
_URL_TIMEOUT_S = 30.0


class AnalysisCache:
    """Decoding and analysing is the expensive part; benchmarks send the same image often."""

    def __init__(self, size: int = _ANALYSIS_CACHE_SIZE) -> None:
        self._lock = threading.Lock()
        self._size = size
        self._items: OrderedDict[bytes, ImageAnalysis] = OrderedDict()

    def analyse(self, data: bytes) -> ImageAnalysis:
        key = hashlib.sha256(data).digest()
        with self._lock:
            cached = self._items.get(key)
            if cached is not None:
                self._items.move_to_end(key)
                return cached
        analysis = analyse_image_bytes(data)
        with self._lock:
            self._items[key] = analysis
            while len(self._items) > self._size:
                self._items.popitem(last=False)
        return analysis

    def clear(self) -> None:
        with self._lock:
            self._items.clear()


class EmulatorService:
    def __init__(self, api_key: str | None = None, config: EmulatorConfig | None = None) -> None:
        self.api_key = api_key
        self._initial_config = config or EmulatorConfig()
        self._config = self._initial_config
        self._config_lock = threading.Lock()
        self.files = FileStore()
        self.batches = BatchStore()
        self.faults = FaultQueue()
        self.stats = Stats(self._config.request_log_size)
        self._analyses = AnalysisCache()

    # ---- configuration and control -------------------------------------------------

    @property
    def config(self) -> EmulatorConfig:
        return self._config

    def configure(self, values: Mapping[str, Any]) -> EmulatorConfig:
        with self._config_lock:
            self._config = self._config.updated(values)
            if "request_log_size" in values:
                self.stats.resize_log(self._config.request_log_size)
            return self._config

    def queue_fault(self, fault: Fault) -> None:
        self.faults.push(fault)

    def reset(self) -> None:
        """Back to the state at start-up: no files, faults or counts, initial config."""
        with self._config_lock:
            self._config = self._initial_config
        self.files.reset()
        self.batches.reset()
        self.faults.clear()
        self.stats.reset(self._config.request_log_size)
        self._analyses.clear()

    # ---- authentication and routing helpers -----------------------------------------

    def check_api_key(self, headers: Mapping[str, str], query: Mapping[str, str]) -> None:
        if self.api_key is None:
            return
        given = headers.get("x-goog-api-key") or query.get("key")
        if not given:
            raise errors.api_key_missing()
        if given != self.api_key:
            raise errors.api_key_invalid()

    def check_model(self, model: str, api_version: str) -> None:
        if not model.startswith(self._config.model_prefixes):
            raise errors.model_not_found(model, api_version)

    # ---- generateContent / countTokens ----------------------------------------------

    def generate(
        self,
        model: str,
        raw_body: bytes,
        *,
        api_version: str = "v1beta",
        headers: Mapping[str, str] | None = None,
        query: Mapping[str, str] | None = None,
        method: str = "generate",
    ) -> tuple[dict[str, Any], int]:
        """The response body and HTTP status (200 or an error). Checks the key and the model
        first (every call is counted, rejected ones too), then applies a queued fault, then
        answers; the configured latency is added to every outcome."""
        started = time.perf_counter()
        config = self._config
        request: GenerateRequest | None = None
        task: str | None = None
        prompt_tokens: int | None = None
        fault: Fault | None = None
        try:
            self.check_api_key(headers or {}, query or {})
            self.check_model(model, api_version)
            fault = self.faults.take(model)
            if fault is not None and fault.is_error:
                raise _error_for_fault(fault, model)
            request = self._parse(model, raw_body, config)
            views = [self._analyse(image.data) for image in request.images]
            question = Question(
                user_text=request.user_text,
                system_text=request.system_text,
                response_mime_type=request.response_mime_type,
                schema=request.schema,
                model=model,
                request_digest=request.digest,
                prose_one_in=config.prose_one_in,
            )
            answer = compose_answer(question, views)
            task = answer.task
            body, outcome = _answer_body(request, answer.text, views, fault)
            prompt_tokens = body["usageMetadata"]["promptTokenCount"]
            status = 200
        except ApiError as exc:
            body, status = exc.body(), exc.code
            outcome = fault.kind if fault is not None and fault.is_error else exc.outcome
        if method == "generate":
            self._sleep_latency(config, started)  # a batch's answers take no call latency
        self.stats.record_generate(
            method=method,
            model=model,
            outcome=outcome,
            status_code=status,
            image_sources=[image.source for image in request.images] if request else [],
            generation_config=_generation_config_of(raw_body, request),
            task=task,
            prompt_token_count=prompt_tokens,
            duration_ms=(time.perf_counter() - started) * 1000,
        )
        return body, status

    def model_info(self, model: str) -> dict[str, Any]:
        """`models.get`: the Model resource as Google describes a Gemini model (the
        fields the SDK reads; the limits are 2.5 Flash's)."""
        return {
            "name": f"models/{model}",
            "version": "001",
            "displayName": f"{model} (emulated)",
            "description": "Answers from the pixels of synthetic scenes: the gvw emulator.",
            "inputTokenLimit": 1048576,
            "outputTokenLimit": 65536,
            "supportedGenerationMethods": ["generateContent", "countTokens"],
            "temperature": 1,
            "topP": 0.95,
            "topK": 64,
            "maxTemperature": 2,
            "thinking": True,
        }

    def count_tokens(self, model: str, raw_body: bytes) -> Reply:
        started = time.perf_counter()
        body = _loads(raw_body)
        # countTokens takes either bare contents or a whole generateContentRequest
        inner = field_value(body, "generateContentRequest") if isinstance(body, dict) else None
        inner_body = inner if isinstance(inner, dict) else body
        request = parse_generate_request(model, inner_body, raw_body, self.files, self._fetch_url)
        sizes = [self._image_size(image.data) for image in request.images]
        usage = prompt_usage(request, sizes, None)
        self.stats.record_generate(
            method="count_tokens",
            model=model,
            outcome="ok",
            status_code=200,
            image_sources=[image.source for image in request.images],
            generation_config=None,
            task=None,
            prompt_token_count=usage.prompt_tokens,
            duration_ms=(time.perf_counter() - started) * 1000,
        )
        return json_reply(
            {
                "totalTokens": usage.prompt_tokens,
                "promptTokensDetails": usage.to_json()["promptTokensDetails"],
            }
        )

    def _parse(self, model: str, raw_body: bytes, config: EmulatorConfig) -> GenerateRequest:
        if len(raw_body) > config.max_request_bytes:
            raise errors.payload_too_large(config.max_request_bytes)
        return parse_generate_request(
            model, _loads(raw_body), raw_body, self.files, self._fetch_url
        )

    def _fetch_url(self, url: str) -> bytes:
        """What the API does with a `file_data.file_uri` that is a URL: fetch it now
        (bounded in time and size), or answer 400 as for any URL it cannot read."""
        limit = self._config.max_url_bytes
        try:
            with urllib.request.urlopen(url, timeout=_URL_TIMEOUT_S) as reply:
                data = bytes(reply.read(limit + 1))
        except (urllib.error.URLError, OSError, ValueError) as exc:
            self.stats.count("url_fetch_failures")
            raise errors.url_not_fetched() from exc
        if len(data) > limit:
            raise errors.url_too_large(limit)
        self.stats.count("url_fetches")
        self.stats.count("url_bytes_total", len(data))
        return data

    def _analyse(self, data: bytes) -> ImageAnalysis:
        try:
            return self._analyses.analyse(data)
        except UndecodableImage as exc:
            raise errors.invalid_image() from exc

    def _image_size(self, data: bytes) -> tuple[int, int]:
        analysis = self._analyse(data)
        return analysis.width_px, analysis.height_px

    @staticmethod
    def _sleep_latency(config: EmulatorConfig, started: float) -> None:
        remaining_s = config.latency_ms / 1000 - (time.perf_counter() - started)
        if remaining_s > 0:
            time.sleep(remaining_s)

    # ---- File API ------------------------------------------------------------------

    def upload_start(self, headers: Mapping[str, str], raw_body: bytes, base_url: str) -> Reply:
        body = _loads(raw_body) if raw_body.strip() else {}
        file_meta = body.get("file") if isinstance(body, dict) else None
        declared = headers.get("x-goog-upload-header-content-length")
        if declared is not None and not declared.isdigit():
            raise errors.invalid_argument("X-Goog-Upload-Header-Content-Length must be a number.")
        session = self.files.start_upload(
            file_meta if isinstance(file_meta, dict) else {},
            int(declared) if declared is not None else None,
            headers.get("x-goog-upload-header-content-type"),
            base_url,
        )
        self.stats.count("uploads_started")
        upload_url = f"{base_url}/upload/v1beta/files?upload_id={session.upload_id}&upload_protocol=resumable"
        return Reply(
            status=200,
            headers={
                "x-goog-upload-url": upload_url,
                "x-goog-upload-status": "active",
                "x-goog-upload-chunk-granularity": str(8 * 1024 * 1024),
            },
            content_type="text/plain; charset=utf-8",
        )

    def upload_command(self, upload_id: str, headers: Mapping[str, str], chunk: bytes) -> Reply:
        commands = {c.strip() for c in headers.get("x-goog-upload-command", "").lower().split(",")}
        try:
            if commands == {"query"}:
                received = self.files.received_bytes(upload_id)
                return Reply(
                    200,
                    headers={
                        "x-goog-upload-status": "active",
                        "x-goog-upload-size-received": str(received),
                    },
                )
            if commands == {"cancel"}:
                self.files.cancel_upload(upload_id)
                return Reply(200, headers={"x-goog-upload-status": "cancelled"})
            if not commands <= {"upload", "finalize"} or not commands:
                raise errors.invalid_argument(
                    f"Unsupported X-Goog-Upload-Command: {headers.get('x-goog-upload-command')}"
                )
            offset_text = headers.get("x-goog-upload-offset")
            if offset_text is not None and not offset_text.isdigit():
                raise errors.invalid_argument("X-Goog-Upload-Offset must be a number.")
            config = self._config
            result = self.files.upload_chunk(
                upload_id,
                int(offset_text) if offset_text is not None else None,
                chunk if "upload" in commands else b"",
                finalize="finalize" in commands,
                processing_delay_s=config.processing_delay_s,
                file_ttl_s=config.file_ttl_s,
            )
        except ApiError as exc:
            # without this header the SDK retries the chunk three times, sleeping in between
            exc.headers.setdefault("x-goog-upload-status", "final")
            raise
        self.stats.count("upload_chunks_total")
        if result.file is None:
            return Reply(
                200,
                headers={
                    "x-goog-upload-status": "active",
                    "x-goog-upload-size-received": str(result.received_bytes),
                },
            )
        self.stats.record_upload_bytes(result.file.name, len(result.file.data))
        return json_reply(
            {"file": result.file.to_json(time.time_ns())},
            headers={"x-goog-upload-status": "final"},
        )

    # ---- the Batch API (worker.emulator.batches) -------------------------------------

    def batch_create(self, model: str, raw_body: bytes, base_url: str) -> Reply:
        fault = self.faults.take_batch(model)
        outcome = {"batch_failed": "BATCH_STATE_FAILED", "batch_expired": "BATCH_STATE_EXPIRED"}
        batch = self.batches.create(
            model,
            _loads(raw_body),
            read_file=self._read_input_file,
            failing_requests=fault.count if fault and fault.kind == "batch_request" else 0,
            fail_outcome=outcome.get(fault.kind) if fault else None,
            inline_max_bytes=self._config.batch_inline_max_bytes,
            broken_lines=fault.count if fault and fault.kind == "batch_bad_line" else 0,
        )
        self._batch_base_url = base_url
        self.stats.count("batches_created")
        self.stats.count("batch_requests_total", len(batch.requests))
        # a test's stand-in for a slow reply: bounded, and over as soon as it is set to 0
        until = time.monotonic() + min(self._config.batch_create_reply_after_s, 600.0)
        while time.monotonic() < until and self._config.batch_create_reply_after_s > 0:
            time.sleep(0.05)
        return json_reply(operation_json(batch))

    def batch_get(self, batch_id: str) -> Reply:
        self.stats.count("batch_gets")
        return json_reply(operation_json(self._advanced(f"batches/{batch_id}")))

    def batch_list(self, query: Mapping[str, str]) -> Reply:
        size_text = query.get("pageSize") or query.get("page_size") or "50"
        if not size_text.isdigit():
            raise errors.invalid_argument("pageSize must be a number.")
        page, next_token = self.batches.page(
            min(int(size_text) or 50, 1000), query.get("pageToken") or query.get("page_token")
        )
        body: dict[str, Any] = {
            "operations": [operation_json(self._advanced(batch.name)) for batch in page]
        }
        if next_token:
            body["nextPageToken"] = next_token
        return json_reply(body)

    def batch_cancel(self, batch_id: str) -> Reply:
        self.batches.cancel(f"batches/{batch_id}")
        return json_reply({})

    def batch_delete(self, batch_id: str) -> Reply:
        self.batches.delete(f"batches/{batch_id}")
        return json_reply({})

    def download_file(self, file_id: str) -> Reply:
        stored = self.files.get(file_id)
        if not stored.generated:
            raise errors.invalid_argument(
                "Only generated files can be downloaded; uploaded files cannot."
            )
        return Reply(200, stored.data, content_type=stored.mime_type)

    def _advanced(self, name: str) -> Batch:
        batch = self.batches.get(name)
        config = self._config
        self.batches.advance(
            batch,
            running_after_s=config.batch_running_after_s,
            done_after_s=config.batch_done_after_s,
            answer=self._batch_answer,
            store_result_file=self._store_result_file,
        )
        return batch

    def _batch_answer(self, model: str, request: dict[str, Any]) -> tuple[dict[str, Any], int]:
        headers = {"x-goog-api-key": self.api_key} if self.api_key else {}
        return self.generate(model, json.dumps(request).encode(), headers=headers, method="batch")

    def _store_result_file(self, data: bytes) -> str:
        stored = self.files.add_generated(
            data,
            mime_type="application/jsonl",
            display_name="batch-results",
            base_url=getattr(self, "_batch_base_url", "http://127.0.0.1"),
            ttl_s=self._config.file_ttl_s,
        )
        return stored.name

    def _read_input_file(self, file_name: str) -> bytes:
        return self.files.get_for_generation(file_name.removeprefix("files/")).data

    def get_file(self, file_id: str) -> Reply:
        self.stats.count("file_gets")
        return json_reply(self.files.get(file_id).to_json(time.time_ns()))

    def delete_file(self, file_id: str) -> Reply:
        self.stats.count("file_deletes")
        self.files.delete(file_id)
        return json_reply({})

    def list_files(self, query: Mapping[str, str]) -> Reply:
        self.stats.count("file_lists")
        page_size_text = query.get("pageSize") or query.get("page_size")
        if page_size_text is not None and not page_size_text.isdigit():
            raise errors.invalid_argument("pageSize must be a number.")
        page, next_token = self.files.list_page(
            int(page_size_text) if page_size_text else None,
            query.get("pageToken") or query.get("page_token"),
        )
        now_ns = time.time_ns()
        body: dict[str, Any] = {}
        if page:
            body["files"] = [f.to_json(now_ns) for f in page]
        if next_token:
            body["nextPageToken"] = next_token
        return json_reply(body)


def _answer_body(
    request: GenerateRequest, text: str, views: list[ImageAnalysis], fault: Fault | None
) -> tuple[dict[str, Any], str]:
    """The 200 body for an answer, damaged by a content fault or cut at maxOutputTokens."""
    model = request.model
    sizes = [(v.width_px, v.height_px) for v in views]
    kind = fault.kind if fault is not None else None
    if kind == "safety":
        return safety_blocked_response(model, prompt_usage(request, sizes, None)), kind
    if kind == "prompt_blocked":
        return prompt_blocked_response(model, prompt_usage(request, sizes, None)), kind
    if kind == "empty":
        return empty_response(model, prompt_usage(request, sizes, "")), kind
    if kind == "deep_json":
        return text_response(
            model, DEEP_JSON_TEXT, "STOP", prompt_usage(request, sizes, DEEP_JSON_TEXT)
        ), kind
    if kind == "many_items":
        many = json.dumps(
            [{"box_2d": [10, 10, 20, 20], "label": f"thing {i}"} for i in range(MANY_ITEMS)]
        )
        return text_response(model, many, "STOP", prompt_usage(request, sizes, many)), kind
    if kind == "garbage":
        return text_response(
            model, GARBAGE_TEXT, "STOP", prompt_usage(request, sizes, GARBAGE_TEXT)
        ), kind
    if kind == "max_tokens":
        cut = text[: max(1, len(text) // 2)]
        return text_response(model, cut, "MAX_TOKENS", prompt_usage(request, sizes, cut)), kind
    limit = request.max_output_tokens
    if limit is not None and text_tokens(text) > limit:
        cut = text[: limit * 4]
        return text_response(
            model, cut, "MAX_TOKENS", prompt_usage(request, sizes, cut)
        ), "max_tokens"
    return text_response(model, text, "STOP", prompt_usage(request, sizes, text)), "ok"


def _error_for_fault(fault: Fault, model: str) -> ApiError:
    if fault.kind in ("429", "429_daily"):
        return errors.resource_exhausted(
            model, fault.retry_delay_s, per_day=fault.kind == "429_daily"
        )
    if fault.kind == "500":
        return errors.internal()
    if fault.kind == "503":
        return errors.unavailable()
    return errors.invalid_argument()


def _generation_config_of(
    raw_body: bytes, request: GenerateRequest | None
) -> dict[str, Any] | None:
    if request is not None:
        return request.generation_config
    try:
        body = json.loads(raw_body)
    except ValueError:
        return None
    config = field_value(body, "generationConfig") if isinstance(body, dict) else None
    return config if isinstance(config, dict) else None


def _loads(raw_body: bytes) -> Any:
    try:
        return json.loads(raw_body)
    except ValueError as exc:
        raise errors.invalid_json(f"Syntax error: {exc}") from exc
