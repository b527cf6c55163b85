"""The emulator's tunable behaviour, changeable at run time through `/_emulator/config`."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

FILE_TTL_DEFAULT_S = 48 * 3600.0  # the File API deletes uploads after 48 hours


@dataclass
class EmulatorConfig:
    # added to every generateContent answer, to make timing-sensitive code observable
    latency_ms: float = 0.0
    # how long a new upload stays PROCESSING before it turns ACTIVE
    processing_delay_s: float = 0.0
    # expirationTime = createTime + file_ttl_s
    file_ttl_s: float = FILE_TTL_DEFAULT_S
    # model names accepted by generateContent; anything else is a 404 like the real API's
    model_prefixes: tuple[str, ...] = ("gemini-",)
    # 1 in N fenced detection answers gets a sentence of prose before the fence (0 = never)
    prose_one_in: int = 3
    # how many generateContent calls `/_emulator/stats` keeps in its request log
    request_log_size: int = 200
    # inline request limit; the API accepts up to 100 MB since January 2026 (20 MB before)
    max_request_bytes: int = 100 * 1024 * 1024
    # what a URL in file_data may hold (the API's limit for fetched files, 100 MB)
    max_url_bytes: int = 100 * 1000 * 1000
    # a batch job is RUNNING from this many seconds after its creation, and answered at
    # the second (the real API takes minutes to 24 hours)
    batch_running_after_s: float = 0.0
    batch_done_after_s: float = 2.0
    # how long a batch create waits, once the batch exists, before it answers: a caller
    # that dies in that time has a batch it never heard of (what a restart must adopt)
    batch_create_reply_after_s: float = 0.0
    # the size an inline batch create may have (the API's 20 MB request limit; a larger
    # one is refused "use a file")
    batch_inline_max_bytes: int = 20 * 1024 * 1024

    def updated(self, values: Mapping[str, Any]) -> EmulatorConfig:
        """A copy with `values` applied; unknown names and wrong types raise ValueError."""
        known = {f.name: f for f in dataclasses.fields(self)}
        changes: dict[str, Any] = {}
        for name, value in values.items():
            if name not in known:
                raise ValueError(f"unknown setting {name!r}; known: {sorted(known)}")
            changes[name] = _coerce(name, value, getattr(self, name))
        return dataclasses.replace(self, **changes)

    def as_json(self) -> dict[str, Any]:
        out = dataclasses.asdict(self)
        out["model_prefixes"] = list(self.model_prefixes)
        return out


def _coerce(name: str, value: Any, current: Any) -> Any:
    if isinstance(current, tuple):
        if isinstance(value, str):
            return (value,)
        if isinstance(value, list | tuple) and all(isinstance(v, str) for v in value):
            return tuple(value)
        raise ValueError(f"{name} takes a list of strings")
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ValueError(f"{name} takes a number")
    if value < 0:
        raise ValueError(f"{name} must not be negative")
    return int(value) if isinstance(current, int) else float(value)
