"""Queued faults: the next generateContent calls fail or misbehave in a chosen way.

Each fault is consumed by the next call(s) in queue order (`count` calls each), optionally
only by calls for one model. Error kinds answer with an HTTP error before the request is
looked at (quota and overload errors come before validation in the real API too); the
other kinds answer 200 with a damaged or blocked response.
"""

from __future__ import annotations

import threading
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from typing import Any, Final

ERROR_KINDS: Final = ("429", "429_daily", "500", "503", "400")
CONTENT_KINDS: Final = (
    "safety",
    "prompt_blocked",
    "max_tokens",
    "garbage",
    "empty",
    "deep_json",  # an answer of 100,000 nested brackets
    "many_items",  # a list of 100,000 boxes
)
# for the next batch job: `count` of its requests fail (500 each), or the whole batch ends
# FAILED or EXPIRED with no answers
BATCH_KINDS: Final = ("batch_request", "batch_failed", "batch_expired", "batch_bad_line")
FAULT_KINDS: Final = ERROR_KINDS + CONTENT_KINDS + BATCH_KINDS


@dataclass
class Fault:
    kind: str
    retry_delay_s: float = 3.0
    count: int = 1
    model: str | None = None

    def __post_init__(self) -> None:
        if self.kind not in FAULT_KINDS:
            raise ValueError(f"unknown fault kind {self.kind!r}; known: {list(FAULT_KINDS)}")
        if self.count < 1:
            raise ValueError("count must be at least 1")
        if self.retry_delay_s < 0:
            raise ValueError("retry_delay_s must not be negative")

    @property
    def is_error(self) -> bool:
        return self.kind in ERROR_KINDS

    @classmethod
    def from_json(cls, obj: Any) -> Fault:
        if not isinstance(obj, Mapping):
            raise ValueError("a fault is a JSON object")
        unknown = set(obj) - {"kind", "retry_delay_s", "count", "model"}
        if unknown:
            raise ValueError(f"unknown fault fields: {sorted(unknown)}")
        if "kind" not in obj:
            raise ValueError("a fault needs a kind")
        model = obj.get("model")
        if model is not None and not isinstance(model, str):
            raise ValueError("model must be a string")
        return cls(
            kind=str(obj["kind"]),
            retry_delay_s=float(obj.get("retry_delay_s", 3.0)),
            count=int(obj.get("count", 1)),
            model=model,
        )


class FaultQueue:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._queue: list[Fault] = []

    def push(self, fault: Fault) -> None:
        with self._lock:
            self._queue.append(fault)

    def take(self, model: str) -> Fault | None:
        """The first queued call fault that applies to `model`, one use of it."""
        with self._lock:
            for index, fault in enumerate(self._queue):
                if fault.kind in BATCH_KINDS:
                    continue
                if fault.model is None or fault.model == model:
                    fault.count -= 1
                    if fault.count == 0:
                        del self._queue[index]
                    return Fault(fault.kind, fault.retry_delay_s, 1, fault.model)
        return None

    def take_batch(self, model: str) -> Fault | None:
        """The first queued batch fault that applies to `model`, whole: a `batch_request`
        fault's count is how many requests of that one batch fail."""
        with self._lock:
            for index, fault in enumerate(self._queue):
                if fault.kind in BATCH_KINDS and (fault.model is None or fault.model == model):
                    return self._queue.pop(index)
        return None

    def pending(self) -> list[dict[str, Any]]:
        with self._lock:
            return [asdict(f) for f in self._queue]

    def clear(self) -> None:
        with self._lock:
            self._queue.clear()
