"""GeminiGateway: the only place that talks to Gemini (through the google-genai SDK).

One client per worker process. The SDK retries nothing here: retries live in one place,
the Celery task, so they are not multiplied across layers. Every SDK and transport error
leaves this module translated into the project's exception tree (`tasks.errors`),
because a pickled `APIError` crosses Celery as a bare `APIError` and loses its class.
"""

from __future__ import annotations

import io
import logging
import re
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import httpx2
from celery.exceptions import SoftTimeLimitExceeded
from google import genai
from google.genai import errors as genai_errors
from google.genai import types

from tasks.base import ModelRequest
from tasks.errors import (
    GvwError,
    ModelBlocked,
    ModelOutputInvalid,
    ModelRateLimited,
    ModelRejected,
    ModelUnavailable,
    QuotaExhausted,
)
from tasks.model_families import thinking_for

log = logging.getLogger(__name__)

# A candidate that stopped for one of these carries no usable answer, and asking again
# gets the same verdict: a final answer, not something to retry.
_BLOCK_REASONS = frozenset(
    {"SAFETY", "PROHIBITED_CONTENT", "BLOCKLIST", "SPII", "IMAGE_SAFETY", "RECITATION"}
)
_OK_REASONS = frozenset({"STOP", "FINISH_REASON_UNSPECIFIED", ""})


@dataclass(frozen=True)
class ImagePart:
    """One image of a request: inline bytes or a File API URI."""

    mime_type: str
    data: bytes | None = None
    file_uri: str | None = None

    def to_sdk(self) -> types.Part:
        if self.file_uri is not None:
            return types.Part.from_uri(file_uri=self.file_uri, mime_type=self.mime_type)
        assert self.data is not None
        return types.Part.from_bytes(data=self.data, mime_type=self.mime_type)


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


@dataclass(frozen=True)
class GenerationOptions:
    temperature: float | None = None
    thinking_budget: int | None = None
    max_output_tokens: int | None = None


_WARM_UP_MODEL = "gemini-2.5-flash"
_WARM_UP_FILE_URI = "https://generativelanguage.googleapis.com/v1beta/files/warm-up"
_WARM_UP_RESPONSE: dict[str, Any] = {
    "candidates": [
        {"content": {"parts": [{"text": "{}"}], "role": "model"}, "finishReason": "STOP"}
    ],
    "usageMetadata": {"promptTokenCount": 1, "candidatesTokenCount": 1, "totalTokenCount": 2},
    "modelVersion": _WARM_UP_MODEL,
}


class GeminiGateway:
    def __init__(self, *, api_key: str | None, base_url: str | None, timeout_s: float) -> None:
        http_options = types.HttpOptions(
            base_url=base_url,
            # HttpOptions.timeout is in milliseconds
            timeout=int(timeout_s * 1000),
        )
        # A placeholder key keeps the SDK from refusing to build a client against an
        # emulator that needs none; Google itself answers 400 API_KEY_INVALID to it.
        self._client = genai.Client(api_key=api_key or "no-key", http_options=http_options)

    @property
    def client(self) -> genai.Client:
        return self._client

    def warm_up(self) -> None:
        """Build the SDK's request and response types once, with no network call.

        pydantic builds a model's validator on its first use, and google-genai's request
        and response types are many nested models: left alone, that first use (~70 ms,
        several times that on a busy core) lands on the first job of every process.
        """
        request = ModelRequest(
            prompt="warm-up", response_json_schema={"type": "object"}, spatial=True
        )
        config = self._config(_WARM_UP_MODEL, request, GenerationOptions())
        images = [
            ImagePart("image/png", data=b"\x89PNG"),
            ImagePart("image/png", file_uri=_WARM_UP_FILE_URI),
        ]
        types._GenerateContentParameters(
            model=_WARM_UP_MODEL, contents=self._contents(images, request), config=config
        )
        # what generate_content does with a REST body; a private classmethod, so the
        # caller treats any failure here as "not warmed", never as an error
        response = types.GenerateContentResponse._from_response(
            response=_WARM_UP_RESPONSE, kwargs={}
        )
        read_response(response)

    def generate(
        self,
        *,
        model: str,
        images: Sequence[ImagePart],
        request: ModelRequest,
        options: GenerationOptions,
    ) -> ModelAnswer:
        config = self._config(model, request, options)
        try:
            response = self._client.models.generate_content(
                model=model, contents=self._contents(images, request), config=config
            )
        except SoftTimeLimitExceeded:
            raise  # Celery's signal to stop: not an SDK error
        except Exception as exc:  # translated below; nothing SDK-shaped leaves this module
            raise translate_error(exc) from exc
        return read_response(response)

    # --- the File API ---------------------------------------------------------------------

    def upload_file(self, data: bytes, *, mime_type: str, display_name: str) -> types.File:
        """Upload from memory (no temporary file) and return the File as Gemini reports it."""
        try:
            return self._client.files.upload(
                file=io.BytesIO(data),
                config=types.UploadFileConfig(mime_type=mime_type, display_name=display_name),
            )
        except SoftTimeLimitExceeded:
            raise
        except Exception as exc:
            raise translate_error(exc) from exc

    def get_file(self, name: str) -> types.File:
        try:
            return self._client.files.get(name=name)
        except SoftTimeLimitExceeded:
            raise
        except Exception as exc:
            raise translate_error(exc) from exc

    def delete_file(self, name: str) -> None:
        try:
            self._client.files.delete(name=name)
        except SoftTimeLimitExceeded:
            raise
        except Exception as exc:
            raise translate_error(exc) from exc

    def list_files(self) -> Iterator[types.File]:
        try:
            yield from self._client.files.list(config=types.ListFilesConfig(page_size=100))
        except SoftTimeLimitExceeded:
            raise
        except Exception as exc:
            raise translate_error(exc) from exc

    def wait_until_active(
        self, file: types.File, *, timeout_s: float, first_pause_s: float = 0.2
    ) -> types.File:
        """Poll `files.get` with backoff until the file is ACTIVE (bounded).

        A file still PROCESSING cannot be used (400 FAILED_PRECONDITION); FAILED is final.
        """
        deadline = time.monotonic() + timeout_s
        pause_s = first_pause_s
        while True:
            state = _enum_name(file.state)
            if state in ("ACTIVE", ""):
                return file
            if state == "FAILED":
                reason = file.error.message if file.error else "no reason given"
                raise ModelRejected(f"Gemini could not process uploaded {file.name}: {reason}")
            if time.monotonic() + pause_s > deadline:
                raise ModelUnavailable(
                    f"uploaded {file.name} is still {state} after {timeout_s:.0f} s"
                )
            time.sleep(pause_s)
            pause_s = min(pause_s * 2, 5.0)
            file = self.get_file(file.name or "")

    @staticmethod
    def _contents(images: Sequence[ImagePart], request: ModelRequest) -> list[Any]:
        # the guide: text after the image parts
        return [*(part.to_sdk() for part in images), types.Part.from_text(text=request.prompt)]

    @staticmethod
    def _config(
        model: str, request: ModelRequest, options: GenerationOptions
    ) -> types.GenerateContentConfig:
        thinking = thinking_for(
            model, spatial=request.spatial, requested_budget=options.thinking_budget
        )
        thinking_config = None
        if thinking.budget is not None:
            thinking_config = types.ThinkingConfig(thinking_budget=thinking.budget)
        elif thinking.level is not None:
            thinking_config = types.ThinkingConfig(thinking_level=thinking.level)  # type: ignore[arg-type]
        schema = dict(request.response_json_schema) if request.response_json_schema else None
        return types.GenerateContentConfig(
            system_instruction=request.system_instruction,
            response_mime_type="application/json" if schema is not None else None,
            response_json_schema=schema,
            thinking_config=thinking_config,
            temperature=options.temperature,
            max_output_tokens=options.max_output_tokens,
        )


def read_response(response: types.GenerateContentResponse) -> ModelAnswer:
    """Check why the model stopped before reading any text."""
    feedback = response.prompt_feedback
    if feedback is not None and feedback.block_reason:
        reason = _enum_name(feedback.block_reason)
        raise ModelBlocked(f"the prompt was blocked by Gemini ({reason})", block_reason=reason)
    usage = _usage(response.usage_metadata)
    if not response.candidates:
        raise ModelOutputInvalid("Gemini returned no candidates", raw_text="")
    candidate = response.candidates[0]
    finish = _enum_name(candidate.finish_reason)
    text = "".join(
        part.text
        for part in (candidate.content.parts or [] if candidate.content else [])
        if part.text and not part.thought
    )
    if finish in _BLOCK_REASONS:
        raise ModelBlocked(f"Gemini stopped the answer ({finish})", finish_reason=finish)
    if finish == "MAX_TOKENS":
        # The answer is cut: retrying (bounded) is better than publishing half of it.
        raise ModelOutputInvalid(
            "the answer was truncated at the output token limit (MAX_TOKENS)",
            raw_text=text,
            finish_reason=finish,
        )
    if finish not in _OK_REASONS:
        raise ModelOutputInvalid(
            f"Gemini stopped with finish_reason {finish}", raw_text=text, finish_reason=finish
        )
    return ModelAnswer(
        text=text,
        finish_reason=finish or "STOP",
        usage=usage,
        model_version=response.model_version,
    )


def _usage(meta: types.GenerateContentResponseUsageMetadata | None) -> TokenUsage:
    if meta is None:
        return TokenUsage()
    prompt = meta.prompt_token_count or 0
    output = meta.candidates_token_count or 0
    thoughts = meta.thoughts_token_count or 0
    return TokenUsage(
        prompt_tokens=prompt,
        output_tokens=output,
        total_tokens=meta.total_token_count or prompt + output + thoughts,
        thoughts_tokens=thoughts,
    )


def _enum_name(value: Any) -> str:
    if value is None:
        return ""
    return str(getattr(value, "value", value))


# --- error translation ------------------------------------------------------------------

_DURATION_RE = re.compile(r"^\s*(\d+(?:\.\d+)?)s\s*$")


def translate_error(exc: BaseException) -> GvwError:
    if isinstance(exc, GvwError):
        return exc
    if isinstance(exc, genai_errors.APIError):
        return translate_api_error(exc.code, exc.status, exc.message, exc.details)
    if isinstance(exc, httpx2.TimeoutException | TimeoutError):
        return ModelUnavailable(f"Gemini request timed out: {exc.__class__.__name__}")
    if isinstance(exc, httpx2.TransportError | ConnectionError):
        return ModelUnavailable(f"cannot reach Gemini: {exc.__class__.__name__}: {exc}")
    return ModelRejected(f"unexpected error calling Gemini: {exc.__class__.__name__}: {exc}")


def translate_api_error(
    code: int | None, status: str | None, message: str | None, body: Any
) -> GvwError:
    error = _error_object(body)
    raw_details = error.get("details")
    details: list[Any] = raw_details if isinstance(raw_details, list) else []
    msg = message or error.get("message") or ""
    status = status or error.get("status") or ""
    summary = f"Gemini {code} {status}: {msg}".strip()
    if code == 429:
        if _is_daily_quota(details, msg):
            return QuotaExhausted(summary, http_status=code)
        return ModelRateLimited(summary, retry_after_s=retry_delay_s(details), http_status=code)
    if code is not None and (code >= 500 or code in (408,)):
        return ModelUnavailable(summary, http_status=code)
    return ModelRejected(summary, http_status=code, status=status)


def _error_object(body: Any) -> Mapping[str, Any]:
    if isinstance(body, list) and len(body) == 1:
        body = body[0]
    if isinstance(body, Mapping):
        inner = body.get("error", body)
        if isinstance(inner, Mapping):
            return inner
    return {}


def retry_delay_s(details: Sequence[Any]) -> float | None:
    """`google.rpc.RetryInfo.retryDelay` ("53s", "1.5s") in seconds, if the 429 carries one."""
    for detail in details:
        if isinstance(detail, Mapping) and str(detail.get("@type", "")).endswith("RetryInfo"):
            match = _DURATION_RE.match(str(detail.get("retryDelay", "")))
            if match:
                return float(match.group(1))
    return None


def _is_daily_quota(details: Sequence[Any], message: str) -> bool:
    """A per-day quota resets at midnight Pacific: retrying within minutes only burns calls."""
    for detail in details:
        if isinstance(detail, Mapping) and str(detail.get("@type", "")).endswith("QuotaFailure"):
            for violation in detail.get("violations") or []:
                if not isinstance(violation, Mapping):
                    continue
                quota_id = str(violation.get("quotaId", "")) + str(violation.get("quotaMetric", ""))
                if "perday" in quota_id.lower().replace("_", "").replace("-", ""):
                    return True
    return "per day" in message.lower() and not details
