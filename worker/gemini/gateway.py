"""GeminiGateway: the only place that talks to Gemini (through the google-genai SDK).

One client per worker process. The SDK retries nothing here: retries live in one place,
the Celery task, so they are not multiplied across layers. Every call runs inside
`gemini_errors`, so what leaves this module is `tasks.errors` and `worker.gemini.records`
only: a pickled `APIError` crosses Celery as a bare `APIError` and loses its class.
"""

from __future__ import annotations

import io
import json
import logging
import re
import threading
import time
from collections.abc import Iterator, Sequence
from dataclasses import replace
from typing import Any

from google import genai
from google.genai import types

from tasks.base import ModelRequest
from tasks.errors import (
    GvwError,
    ModelBlocked,
    ModelOutputInvalid,
    ModelRejected,
    ModelUnavailable,
)
from tasks.model_families import media_resolution_for, thinking_for
from worker.gemini.errors import gemini_errors, translate_api_error
from worker.gemini.records import (
    GenerationOptions,
    ImagePart,
    ModelAnswer,
    RemoteBatch,
    RemoteFile,
    TokenUsage,
)

log = logging.getLogger(__name__)

# A candidate that stopped for one of these carries no usable answer, and asking again
# gets the same verdict: a final answer, not something to retry.
_BLOCK_REASONS = frozenset(
    {"SAFETY", "PROHIBITED_CONTENT", "BLOCKLIST", "SPII", "IMAGE_SAFETY", "RECITATION"}
)
_OK_REASONS = frozenset({"STOP", "FINISH_REASON_UNSPECIFIED", ""})


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
        # the body of this thread's last generateContent answer: kept for the one case
        # the SDK cannot read an answer it was paid for (see `generate`)
        self._answer_body = threading.local()
        http_options = types.HttpOptions(
            base_url=base_url,
            # HttpOptions.timeout is in milliseconds
            timeout=int(timeout_s * 1000),
            client_args={"event_hooks": {"response": [self._keep_answer_body]}},
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
        config = self._config(_WARM_UP_MODEL, request, GenerationOptions(), "MEDIA_RESOLUTION_LOW")
        images = [
            ImagePart("image/png", data=b"\x89PNG"),
            ImagePart("image/png", file_uri=_WARM_UP_FILE_URI),
        ]
        types._GenerateContentParameters(
            model=_WARM_UP_MODEL,
            contents=self._contents(images, request, "MEDIA_RESOLUTION_LOW"),
            config=config,
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
        resolution = media_resolution_for(model, options.media_resolution)
        config = self._config(model, request, options, resolution.request)
        contents = self._contents(images, request, resolution.per_part)
        uses_files = any(part.file_uri is not None and not part.fetched for part in images)
        uses_urls = any(part.fetched for part in images)
        self._answer_body.value = b""
        with gemini_errors(uses_files=uses_files, uses_urls=uses_urls):
            try:
                response = self._client.models.generate_content(
                    model=model, contents=contents, config=config
                )
            except RecursionError:
                # With a response schema the SDK parses the answer's text as JSON for
                # itself (`parsed`, which we never read), catching only ValueError: JSON
                # nested past the recursion limit escapes it. The answer was paid for and
                # is unreadable: a bad answer, re-asked a bounded number of times, with
                # the text the model sent.
                raise ModelOutputInvalid(
                    "the answer nests JSON deeper than it can be read",
                    raw_text=_answer_text(self._answer_body.value),
                ) from None
            finally:
                self._answer_body.value = b""  # not kept past the call
        return read_response(response)

    def _keep_answer_body(self, response: Any) -> None:
        if str(response.request.url.path).endswith(":generateContent"):
            response.read()
            self._answer_body.value = response.content

    # --- the File API ---------------------------------------------------------------------

    def upload_file(self, data: bytes, *, mime_type: str, display_name: str) -> RemoteFile:
        """Upload from memory (no temporary file); the file as Gemini reports it."""
        with gemini_errors():
            uploaded = self._client.files.upload(
                file=io.BytesIO(data),
                config=types.UploadFileConfig(mime_type=mime_type, display_name=display_name),
            )
        return _remote(uploaded, size_bytes=len(data), mime_type=mime_type)

    def get_file(self, name: str) -> RemoteFile:
        with gemini_errors():
            return _remote(self._client.files.get(name=name))

    def delete_file(self, name: str) -> None:
        with gemini_errors():
            self._client.files.delete(name=name)

    def list_files(self) -> Iterator[RemoteFile]:
        with gemini_errors():
            for file in self._client.files.list(config=types.ListFilesConfig(page_size=100)):
                yield _remote(file)

    def wait_until_active(
        self, file: RemoteFile, *, timeout_s: float, first_pause_s: float = 0.2
    ) -> RemoteFile:
        """Poll `files.get` with backoff until the file is ACTIVE (bounded).

        A file still PROCESSING cannot be used (400 FAILED_PRECONDITION); FAILED is final.
        """
        deadline = time.monotonic() + timeout_s
        pause_s = first_pause_s
        while True:
            if file.state in ("ACTIVE", ""):
                return file
            if file.state == "FAILED":
                reason = file.error_message or "no reason given"
                raise ModelRejected(f"Gemini could not process uploaded {file.name}: {reason}")
            if time.monotonic() + pause_s > deadline:
                raise ModelUnavailable(
                    f"uploaded {file.name} is still {file.state} after {timeout_s:.0f} s"
                )
            time.sleep(pause_s)
            pause_s = min(pause_s * 2, 5.0)
            file = self.get_file(file.name)

    # --- the Batch API ----------------------------------------------------------------------

    def batch_request(
        self,
        *,
        model: str,
        images: Sequence[ImagePart],
        request: ModelRequest,
        options: GenerationOptions,
        key: str,
    ) -> dict[str, Any]:
        """One request of a batch, as the SDK's `InlinedRequest` in JSON (what the fleet
        keeps in Redis until a batch takes it), its job id in ``metadata.key``."""
        resolution = media_resolution_for(model, options.media_resolution)
        config = self._config(model, request, options, resolution.request)
        contents = self._contents(images, request, resolution.per_part)
        inlined = types.InlinedRequest(
            model=model,
            contents=[types.Content(role="user", parts=contents)],
            config=config,
            metadata={"key": key},
        )
        return dict(inlined.model_dump(mode="json", exclude_none=True))

    def create_batch(
        self,
        *,
        model: str,
        requests: Sequence[dict[str, Any]],
        display_name: str,
        inline_max_bytes: int,
    ) -> tuple[RemoteBatch, str]:
        """Submit `requests` as one batch job: inline when they fit `inline_max_bytes`,
        else as a JSONL file uploaded through the File API (one ``{"key", "request"}``
        line per request). Returns the batch and its source ("inline" or "file")."""
        inlined = [types.InlinedRequest.model_validate(r) for r in requests]
        config = types.CreateBatchJobConfig(display_name=display_name)
        size = sum(len(json.dumps(r)) for r in requests)
        if size <= inline_max_bytes:
            try:
                with gemini_errors():
                    job = self._client.batches.create(model=model, src=inlined, config=config)
                return _remote_batch(job), "inline"
            except ModelRejected as err:
                if not _too_large(err):
                    raise
                # our measure of the requests fell short of Gemini's: the same batch as
                # a file, still at the batch price (never the interactive path)
                log.info("an inline batch was too large for Gemini: sending it as a file")
        with gemini_errors():
            lines = (
                json.dumps({"key": str((r.metadata or {}).get("key")), "request": body})
                for r, body in ((r, _rest_request(self._client, r)) for r in inlined)
            )
            data = ("\n".join(lines) + "\n").encode()
            uploaded = self._client.files.upload(
                file=io.BytesIO(data),
                config=types.UploadFileConfig(
                    mime_type="application/jsonl", display_name=display_name
                ),
            )
            job = self._client.batches.create(model=model, src=uploaded.name or "", config=config)
        return _remote_batch(job), "file"

    def get_batch(self, name: str) -> RemoteBatch:
        with gemini_errors():
            return _remote_batch(self._client.batches.get(name=name))

    def find_batch(self, display_name: str, *, max_pages: int = 10) -> RemoteBatch | None:
        """The batch the fleet named `display_name` (the newest pages), or None: how a
        follower that died between submitting and recording finds what it submitted."""
        with gemini_errors():
            pager = self._client.batches.list(config=types.ListBatchJobsConfig(page_size=100))
            for index, job in enumerate(pager):
                if index >= max_pages * 100:
                    break
                if job.display_name == display_name:
                    return _remote_batch(job)
        return None

    def cancel_batch(self, name: str) -> None:
        with gemini_errors():
            self._client.batches.cancel(name=name)

    def batch_answers(self, name: str) -> dict[str, ModelAnswer | GvwError]:
        """A finished batch's answers by key: the answer, or the error its request
        ended in (translated like an interactive call's, so the retry policy applies)."""
        with gemini_errors():
            job = self._client.batches.get(name=name)
            dest = job.dest
            found: dict[str, ModelAnswer | GvwError] = {}
            if dest is not None and dest.inlined_responses is not None:
                for item in dest.inlined_responses:
                    key = str((item.metadata or {}).get("key", ""))
                    found[key] = _batch_item(item.response, item.error)
            elif dest is not None and dest.file_name:
                data = self._client.files.download(file=dest.file_name)
                # lines end at "\n" only: splitlines() would also cut an answer at a
                # U+2028 or U+0085 its JSON need not escape
                for line in data.decode("utf-8", "replace").split("\n"):
                    if line.strip():
                        key, answer = _batch_line(line)
                        if key:
                            found[key] = answer
        return found

    @staticmethod
    def _contents(
        images: Sequence[ImagePart], request: ModelRequest, resolution: str | None
    ) -> list[Any]:
        # the guide: text after the image parts
        parts = [_sdk_part(part, resolution) for part in images]
        return [*parts, types.Part.from_text(text=request.prompt)]

    @staticmethod
    def _config(
        model: str, request: ModelRequest, options: GenerationOptions, resolution: str | None
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
            media_resolution=types.MediaResolution(resolution) if resolution else None,
        )


_LINE_KEY = re.compile(r'"key"\s*:\s*"([^"\\]{1,200})"')


def _batch_line(line: str) -> tuple[str, ModelAnswer | GvwError]:
    """One line of a batch's result file, read on its own: its key and its answer, or
    the error it stands for. A line that cannot be read is that request's unreadable
    answer (re-asked by the usual policy), never an error of the whole file."""
    try:
        entry = json.loads(line)
        if not isinstance(entry, dict):
            raise ValueError("not a JSON object")
        response = entry.get("response")
        parsed = (
            types.GenerateContentResponse._from_response(response=response, kwargs={})
            if isinstance(response, dict)
            else None
        )
        return str(entry.get("key", "")), _batch_item(parsed, entry.get("error"))
    except Exception as exc:  # any way a line can be broken: the line's problem alone
        found = _LINE_KEY.search(line)
        return (found.group(1) if found else ""), ModelOutputInvalid(
            f"its line in the batch's result file could not be read ({type(exc).__name__})",
            raw_text=line[:100_000],
        )


def _too_large(err: GvwError) -> bool:
    """Gemini refused a request for its size (an inline batch past its limit)."""
    text = err.message.lower()
    return any(word in text for word in ("exceed", "too large", "payload size", "use a file"))


def _answer_text(body: bytes) -> str:
    """The text of a generateContent answer's raw body (its first candidate's parts)."""
    try:
        answer = json.loads(body)
        parts = answer["candidates"][0]["content"]["parts"]
        return "".join(p.get("text", "") for p in parts if not p.get("thought"))
    except (ValueError, RecursionError, LookupError, TypeError, AttributeError):
        return body.decode("utf-8", "replace")


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


def _remote_batch(job: types.BatchJob) -> RemoteBatch:
    return RemoteBatch(
        name=job.name or "",
        display_name=job.display_name or "",
        state=_enum_name(job.state),
        model=job.model or "",
        create_time=str(job.create_time or ""),
        end_time=str(job.end_time or ""),
    )


def _batch_item(
    response: types.GenerateContentResponse | None, error: Any
) -> ModelAnswer | GvwError:
    if response is None:
        # a JSONL result line holds a dict; an inline response, the SDK's JobError
        if hasattr(error, "model_dump"):
            error = error.model_dump(exclude_none=True)
        status = error if isinstance(error, dict) else {}
        return translate_api_error(
            int(status.get("code") or 500), str(status.get("status") or ""),
            str(status.get("message") or "the request failed inside its batch"), None,
        )  # fmt: skip
    try:
        return replace(read_response(response), batch=True)
    except GvwError as exc:
        return exc


def _rest_request(client: genai.Client, inlined: types.InlinedRequest) -> dict[str, Any]:
    """The REST body of one batch request, as the SDK would send it inline: a JSONL line
    carries the same. The SDK has no public converter; its own (private) one is used
    and `tests/integration/test_batch_mode.py` runs it against the emulator."""
    from google.genai import _common
    from google.genai.batches import _InlinedRequest_to_mldev

    converted = _InlinedRequest_to_mldev(client._api_client, inlined)
    body: dict[str, Any] = _common.encode_unserializable_types(_common.convert_to_dict(converted))
    request: dict[str, Any] = body["request"]
    return request


def _sdk_part(part: ImagePart, resolution: str | None = None) -> types.Part:
    level = types.PartMediaResolution(level=resolution) if resolution else None  # type: ignore[arg-type]
    if part.file_uri is not None:
        return types.Part.from_uri(
            file_uri=part.file_uri, mime_type=part.mime_type, media_resolution=level
        )
    assert part.data is not None
    return types.Part.from_bytes(data=part.data, mime_type=part.mime_type, media_resolution=level)


def _remote(file: types.File, *, size_bytes: int = 0, mime_type: str = "") -> RemoteFile:
    """The SDK's File as the worker's own `RemoteFile` (what crosses the gateway)."""
    return RemoteFile(
        name=file.name or "",
        uri=file.uri or "",
        mime_type=file.mime_type or mime_type,
        size_bytes=int(file.size_bytes or size_bytes),
        state=_enum_name(file.state),
        expires_at=file.expiration_time.timestamp() if file.expiration_time else None,
        display_name=file.display_name or "",
        error_message=file.error.message or "" if file.error else "",
    )
