"""What crosses the gateway: the worker's own small types, never the SDK's.

`ImagePart` is one image of a request, `ModelAnswer` what came back, `RemoteFile` a File
API upload as the rest of the worker needs to know it (no `google.genai.types.File`
leaves `worker.gemini`).
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class ImagePart:
    """One image of a request: inline bytes or a File API URI."""

    mime_type: str
    data: bytes | None = field(default=None, repr=False)
    # never in a repr: a pre-signed URL is a credential
    file_uri: str | None = field(default=None, repr=False)
    # file_uri is a URL Gemini fetches itself (a pre-signed S3 GET), not a File API URI
    fetched: bool = False


@dataclass(frozen=True)
class TokenUsage:
    prompt_tokens: int = 0
    output_tokens: int = 0
    total_tokens: int = 0
    thoughts_tokens: int = 0


@dataclass(frozen=True)
class ModelAnswer:
    text: str
    finish_reason: str
    usage: TokenUsage
    model_version: str | None = None
    # answered through the Batch API, billed at the batch price
    batch: bool = False


@dataclass(frozen=True)
class GenerationOptions:
    temperature: float | None = None
    thinking_budget: int | None = None
    max_output_tokens: int | None = None
    # low | medium | high | ultra_high (None: the model's default); the gateway sends it
    # per image part or per request, as the model family takes it
    media_resolution: str | None = None


@dataclass(frozen=True)
class RemoteFile:
    """A File API upload: its name (``files/abc``), URI, type, size, processing state
    (``PROCESSING``, ``ACTIVE``, ``FAILED``; "" when not reported) and when Gemini deletes
    it (epoch seconds; None when not reported)."""

    name: str
    uri: str
    mime_type: str
    size_bytes: int
    state: str
    expires_at: float | None
    display_name: str = ""
    error_message: str = ""


@dataclass(frozen=True)
class RemoteBatch:
    """A Batch API job as the worker needs it: its name (``batches/abc``), the display
    name the fleet gave it, and its state (``JOB_STATE_PENDING``, ``_RUNNING``,
    ``_SUCCEEDED``, ``_FAILED``, ``_CANCELLED``, ``_EXPIRED``)."""

    name: str
    display_name: str
    state: str
    model: str = ""
    create_time: str = ""
    end_time: str = ""

    @property
    def finished(self) -> bool:
        return self.state in BATCH_FINAL_STATES


BATCH_FINAL_STATES = frozenset(
    {"JOB_STATE_SUCCEEDED", "JOB_STATE_FAILED", "JOB_STATE_CANCELLED", "JOB_STATE_EXPIRED"}
)
