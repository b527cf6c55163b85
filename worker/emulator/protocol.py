"""Wire-format details of Google's REST JSON, shared by every endpoint of the emulator."""

from __future__ import annotations

import base64
import json
import re
import secrets
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

JSON_CONTENT_TYPE = "application/json; charset=UTF-8"


@dataclass
class Reply:
    """One HTTP response, built by the service and written by the HTTP handler."""

    status: int
    body: bytes = b""
    headers: dict[str, str] = field(default_factory=dict)
    content_type: str = JSON_CONTENT_TYPE


def dumps_google_json(obj: Any) -> bytes:
    """Google pretty-prints with 2-space indentation and ends the body with `}\\n`."""
    return (json.dumps(obj, indent=2, ensure_ascii=False) + "\n").encode("utf-8")


def json_reply(obj: Any, status: int = 200, headers: dict[str, str] | None = None) -> Reply:
    return Reply(status=status, body=dumps_google_json(obj), headers=dict(headers or {}))


def field_value(obj: Mapping[str, Any], camel_name: str, default: Any = None) -> Any:
    """Read a proto field by either JSON name. Google's JSON parser accepts both the
    lowerCamel and the snake_case spelling, and the SDK really sends a mix (`inlineData`
    holding `mime_type`, `thinkingConfig` holding `thinking_level`)."""
    if camel_name in obj:
        return obj[camel_name]
    snake_name = re.sub(r"(?<!^)([A-Z])", r"_\1", camel_name).lower()
    return obj.get(snake_name, default)


def rfc3339_from_ns(epoch_ns: int) -> str:
    """`2024-08-28T08:24:56.049455995Z`: UTC with 9 fractional digits."""
    seconds, nanos = divmod(epoch_ns, 1_000_000_000)
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(seconds)) + f".{nanos:09d}Z"


def duration_text(seconds: float) -> str:
    """Protobuf Duration JSON: `"3s"`, `"1.5s"`."""
    if float(seconds).is_integer():
        return f"{int(seconds)}s"
    return f"{seconds:.3f}".rstrip("0") + "s"


def new_response_id() -> str:
    # real ids are 22-24 url-safe base64 characters, e.g. "SzQnae6DDISI_uMPsrGLsQg"
    return base64.urlsafe_b64encode(secrets.token_bytes(17)).decode("ascii").rstrip("=")[:23]
