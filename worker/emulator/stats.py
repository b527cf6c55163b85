"""Counters and a request log, so tests and benchmarks can see what reached the "API"."""

from __future__ import annotations

import copy
import threading
import time
from collections import Counter, deque
from typing import Any

from worker.emulator.protocol import rfc3339_from_ns


class Stats:
    def __init__(self, request_log_size: int = 200) -> None:
        self._lock = threading.Lock()
        self._request_log_size = request_log_size
        self._reset_locked()

    def _reset_locked(self) -> None:
        self._started_ns = time.time_ns()
        self._counters: Counter[str] = Counter()
        self._by_model: Counter[str] = Counter()
        self._by_outcome: Counter[str] = Counter()
        self._images_by_source: Counter[str] = Counter()
        self._upload_bytes_by_file: dict[str, int] = {}
        self._requests: deque[dict[str, Any]] = deque(maxlen=self._request_log_size or None)

    def reset(self, request_log_size: int | None = None) -> None:
        with self._lock:
            if request_log_size is not None:
                self._request_log_size = request_log_size
            self._reset_locked()

    def resize_log(self, request_log_size: int) -> None:
        with self._lock:
            self._request_log_size = request_log_size
            self._requests = deque(self._requests, maxlen=request_log_size or None)

    def count(self, name: str, amount: int = 1) -> None:
        with self._lock:
            self._counters[name] += amount

    def record_generate(
        self,
        *,
        method: str,
        model: str,
        outcome: str,
        status_code: int,
        image_sources: list[str],
        generation_config: dict[str, Any] | None,
        task: str | None,
        prompt_token_count: int | None,
        duration_ms: float,
    ) -> None:
        now_ns = time.time_ns()
        entry = {
            "time": now_ns / 1e9,  # epoch seconds, so tests can subtract two entries
            "time_rfc3339": rfc3339_from_ns(now_ns),
            "method": method,
            "model": model,
            "outcome": outcome,
            "status_code": status_code,
            "images": len(image_sources),
            "image_sources": image_sources,
            "task": task,
            "generation_config": copy.deepcopy(generation_config),
            "prompt_token_count": prompt_token_count,
            "duration_ms": round(duration_ms, 3),
        }
        with self._lock:
            self._counters[f"{method}_calls_total"] += 1
            if method == "generate":
                self._by_model[model] += 1
                self._by_outcome[outcome] += 1
                self._counters["images_total"] += len(image_sources)
                self._images_by_source.update(image_sources)
            if self._request_log_size:
                self._requests.append(entry)

    def record_upload_bytes(self, file_name: str, size_bytes: int) -> None:
        with self._lock:
            self._counters["uploads_completed"] += 1
            self._counters["upload_bytes_total"] += size_bytes
            self._upload_bytes_by_file[file_name] = size_bytes

    def snapshot(self) -> dict[str, Any]:
        with self._lock:
            counters = self._counters
            return {
                "since": rfc3339_from_ns(self._started_ns),
                "http_requests_total": counters["http_requests_total"],
                "bytes_received_total": counters["bytes_received_total"],
                "generate_calls_total": counters["generate_calls_total"],
                "generate_calls": counters["generate_calls_total"],  # short alias
                "generate_calls_by_model": dict(self._by_model),
                "generate_calls_by_outcome": dict(self._by_outcome),
                "count_tokens_calls_total": counters["count_tokens_calls_total"],
                "images_total": counters["images_total"],
                "images_by_source": dict(self._images_by_source),
                "uploads_started": counters["uploads_started"],
                "uploads_completed": counters["uploads_completed"],
                "upload_chunks_total": counters["upload_chunks_total"],
                "upload_bytes_total": counters["upload_bytes_total"],
                "upload_bytes_by_file": dict(self._upload_bytes_by_file),
                "file_gets": counters["file_gets"],
                "file_lists": counters["file_lists"],
                "file_deletes": counters["file_deletes"],
                "batches_created": counters["batches_created"],
                "batch_requests_total": counters["batch_requests_total"],
                "batch_calls": counters["batch_calls_total"],
                "url_fetches": counters["url_fetches"],
                "url_fetch_failures": counters["url_fetch_failures"],
                "url_bytes_total": counters["url_bytes_total"],
                "requests": [copy.deepcopy(entry) for entry in self._requests],
            }
