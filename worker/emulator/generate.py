"""generateContent on the wire: reading the request, writing the response body.

The request is read as Google's JSON parser reads it: both lowerCamel and snake_case field
names are accepted (the SDK sends e.g. `inlineData: {"mime_type": ...}`). Response bodies
follow the 2025+ shape: `candidates[{content{parts[{text}], role}, finishReason, index}]`,
`usageMetadata` with `promptTokensDetails` by modality, `modelVersion`, `responseId`.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import re
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any, Final

from worker.emulator import errors
from worker.emulator.files import FileStore
from worker.emulator.protocol import field_value, new_response_id
from worker.emulator.tokens import image_tokens, is_gemini_3_or_later, text_tokens

SUPPORTED_IMAGE_MIME_TYPES: Final = frozenset(
    {"image/png", "image/jpeg", "image/webp", "image/heic", "image/heif"}
)
_FILE_URI_ID_RE = re.compile(r"(?:^|/)files/([a-z0-9][a-z0-9-]*)$")
# models that take thinking_budget and reject thinking_level
_BUDGET_ONLY_MODEL_RE = re.compile(r"^gemini-(1|2)[.-]")
_THOUGHT_TOKENS_BY_LEVEL: Final = {"minimal": 0, "low": 32, "medium": 96, "high": 160}
_SAFETY_RATINGS_BLOCKED: Final = [
    {"category": "HARM_CATEGORY_SEXUALLY_EXPLICIT", "probability": "NEGLIGIBLE"},
    {"category": "HARM_CATEGORY_HATE_SPEECH", "probability": "NEGLIGIBLE"},
    {"category": "HARM_CATEGORY_HARASSMENT", "probability": "NEGLIGIBLE"},
    {"category": "HARM_CATEGORY_DANGEROUS_CONTENT", "probability": "HIGH", "blocked": True},
]


@dataclass(frozen=True)
class ImageInput:
    mime_type: str
    data: bytes = field(repr=False)
    source: str  # "inline" or "file"
    file_name: str | None = None
    media_resolution: str | None = None  # the part's own level (Gemini 3 and later)


@dataclass(frozen=True)
class GenerateRequest:
    model: str
    user_text: str
    system_text: str
    text_parts: list[str]
    images: list[ImageInput]
    generation_config: dict[str, Any]
    digest: int  # stable per request body, for deterministic variation

    @property
    def response_mime_type(self) -> str | None:
        value = field_value(self.generation_config, "responseMimeType")
        return str(value) if value else None

    @property
    def schema(self) -> dict[str, Any] | None:
        schema = field_value(self.generation_config, "responseJsonSchema")
        if schema is None:
            schema = field_value(self.generation_config, "responseSchema")
        return schema if isinstance(schema, dict) else None

    @property
    def media_resolution(self) -> str | None:
        value = field_value(self.generation_config, "mediaResolution")
        return str(value) if value else None

    @property
    def max_output_tokens(self) -> int | None:
        value = field_value(self.generation_config, "maxOutputTokens")
        return int(value) if isinstance(value, int | float | str) and str(value).isdigit() else None

    @property
    def thoughts_token_count(self) -> int | None:
        """Thinking the emulator pretends to have done: reported only when asked for."""
        thinking = field_value(self.generation_config, "thinkingConfig") or {}
        budget = field_value(thinking, "thinkingBudget")
        level = field_value(thinking, "thinkingLevel")
        if isinstance(budget, int):
            return 96 if budget < 0 else min(budget, 96) or None
        if isinstance(level, str):
            return _THOUGHT_TOKENS_BY_LEVEL.get(level.lower()) or None
        return None


def parse_generate_request(
    model: str,
    body: Any,
    raw_body: bytes,
    files: FileStore,
    fetch_url: Callable[[str], bytes] | None = None,
) -> GenerateRequest:
    if not isinstance(body, dict):
        raise errors.invalid_json("Expected a JSON object.")
    contents = body.get("contents")
    if not contents:
        raise errors.invalid_argument(
            "* GenerateContentRequest.contents: contents is not specified\n"
        )
    if not isinstance(contents, list):
        raise errors.invalid_json("Invalid value at 'contents': expected a list.")
    config = field_value(body, "generationConfig") or {}
    if not isinstance(config, dict):
        raise errors.invalid_json("Invalid value at 'generation_config': expected an object.")
    _check_thinking(model, config)
    _check_media_resolution(config)

    user_texts: list[str] = []
    images: list[ImageInput] = []
    for c_index, content in enumerate(contents):
        if not isinstance(content, dict):
            raise errors.invalid_json(f"Invalid value at 'contents[{c_index}]'.")
        role = content.get("role") or "user"
        for p_index, part in enumerate(content.get("parts") or []):
            where = f"contents[{c_index}].parts[{p_index}]"
            if not isinstance(part, dict):
                raise errors.invalid_json(f"Invalid value at '{where}'.")
            text = part.get("text")
            if isinstance(text, str) and role != "model":
                user_texts.append(text)
            level = _part_media_resolution(model, part, where)
            inline = field_value(part, "inlineData")
            if isinstance(inline, dict):
                images.append(replace(_inline_image(inline, where), media_resolution=level))
            file_data = field_value(part, "fileData")
            if isinstance(file_data, dict):
                image = _file_image(file_data, files, fetch_url)
                images.append(replace(image, media_resolution=level))

    system_texts: list[str] = []
    system = field_value(body, "systemInstruction")
    if isinstance(system, dict):
        system_texts = [
            p["text"] for p in system.get("parts") or [] if isinstance(p.get("text"), str)
        ]
    return GenerateRequest(
        model=model,
        user_text="\n".join(user_texts),
        system_text="\n".join(system_texts),
        text_parts=user_texts + system_texts,
        images=images,
        generation_config=config,
        digest=int.from_bytes(hashlib.sha256(raw_body).digest()[:8], "big"),
    )


def _check_thinking(model: str, config: dict[str, Any]) -> None:
    thinking = field_value(config, "thinkingConfig")
    if not isinstance(thinking, dict):
        return
    has_budget = field_value(thinking, "thinkingBudget") is not None
    has_level = field_value(thinking, "thinkingLevel") is not None
    if has_budget and has_level:
        raise errors.thinking_budget_and_level()
    if has_level and _BUDGET_ONLY_MODEL_RE.match(model):
        raise errors.thinking_level_unsupported(model)


_REQUEST_LEVELS: Final = frozenset(
    {"MEDIA_RESOLUTION_UNSPECIFIED", "MEDIA_RESOLUTION_LOW", "MEDIA_RESOLUTION_MEDIUM",
     "MEDIA_RESOLUTION_HIGH"}
)  # fmt: skip
_PART_LEVELS: Final = _REQUEST_LEVELS | {"MEDIA_RESOLUTION_ULTRA_HIGH"}


def _check_media_resolution(config: dict[str, Any]) -> None:
    """The request-wide enum has no ULTRA_HIGH: proto JSON refuses unknown enum names."""
    value = field_value(config, "mediaResolution")
    if value is not None and value not in _REQUEST_LEVELS:
        raise errors.invalid_json(
            f"Invalid value at 'generation_config.media_resolution' "
            f'(type.googleapis.com/google.ai.generativelanguage.v1beta.MediaResolution), "{value}"'
        )


def _part_media_resolution(model: str, part: dict[str, Any], where: str) -> str | None:
    """A part's own `mediaResolution.level`: Gemini 3 and later only."""
    value = field_value(part, "mediaResolution")
    if value is None:
        return None
    level = field_value(value, "level") if isinstance(value, dict) else None
    if level not in _PART_LEVELS:
        raise errors.invalid_json(f"Invalid value at '{where}.media_resolution.level', {level!r}")
    if not is_gemini_3_or_later(model):
        raise errors.invalid_argument(  # wording ours
            f"Per-part media resolution is not supported by models/{model}."
        )
    return str(level)


def _inline_image(inline: dict[str, Any], where: str) -> ImageInput:
    mime_type = str(field_value(inline, "mimeType") or "")
    if mime_type.lower() not in SUPPORTED_IMAGE_MIME_TYPES:
        raise errors.unsupported_mime_type(mime_type)
    try:
        data = _decode_proto_bytes(str(field_value(inline, "data") or ""))
    except (binascii.Error, ValueError) as exc:
        raise errors.invalid_json(
            f"Invalid value at '{where}.inline_data.data' (TYPE_BYTES), Base64 decoding failed."
        ) from exc
    return ImageInput(mime_type=mime_type.lower(), data=data, source="inline")


def _decode_proto_bytes(text: str) -> bytes:
    """Proto JSON bytes: standard or URL-safe base64 (the SDK sends URL-safe), padding optional."""
    text = text.strip().replace("-", "+").replace("_", "/")
    return base64.b64decode(text + "=" * (-len(text) % 4), validate=True)


def _file_image(
    file_data: dict[str, Any], files: FileStore, fetch_url: Callable[[str], bytes] | None
) -> ImageInput:
    uri = str(field_value(file_data, "fileUri") or "")
    match = _FILE_URI_ID_RE.search(uri)
    if not match and uri.startswith(("https://", "http://")) and fetch_url is not None:
        # a public or pre-signed URL: the API fetches it during the request
        mime_type = str(field_value(file_data, "mimeType") or "").lower()
        if mime_type not in SUPPORTED_IMAGE_MIME_TYPES:
            raise errors.unsupported_mime_type(mime_type)
        return ImageInput(mime_type=mime_type, data=fetch_url(uri), source="url")
    if not match:
        raise errors.invalid_argument("Unsupported file uri.")  # wording ours
    stored = files.get_for_generation(match.group(1))
    mime_type = str(field_value(file_data, "mimeType") or stored.mime_type).lower()
    if mime_type not in SUPPORTED_IMAGE_MIME_TYPES:
        raise errors.unsupported_mime_type(mime_type)
    return ImageInput(mime_type=mime_type, data=stored.data, source="file", file_name=stored.name)


@dataclass(frozen=True)
class Usage:
    text_tokens: int
    image_tokens: int
    candidates_tokens: int | None
    thoughts_tokens: int | None

    @property
    def prompt_tokens(self) -> int:
        return self.text_tokens + self.image_tokens

    def to_json(self) -> dict[str, Any]:
        usage: dict[str, Any] = {"promptTokenCount": self.prompt_tokens}
        if self.candidates_tokens is not None:
            usage["candidatesTokenCount"] = self.candidates_tokens
        total = self.prompt_tokens + (self.candidates_tokens or 0) + (self.thoughts_tokens or 0)
        usage["totalTokenCount"] = total
        details = [{"modality": "TEXT", "tokenCount": self.text_tokens}]
        if self.image_tokens:
            details.append({"modality": "IMAGE", "tokenCount": self.image_tokens})
        usage["promptTokensDetails"] = details
        if self.thoughts_tokens:
            usage["thoughtsTokenCount"] = self.thoughts_tokens
        return usage


def prompt_usage(
    request: GenerateRequest, image_sizes: list[tuple[int, int]], answer: str | None
) -> Usage:
    return Usage(
        text_tokens=sum(text_tokens(t) for t in request.text_parts),
        image_tokens=sum(
            image_tokens(
                w,
                h,
                model=request.model,
                media_resolution=image.media_resolution or request.media_resolution,
            )
            for image, (w, h) in zip(request.images, image_sizes, strict=True)
        ),
        candidates_tokens=text_tokens(answer) if answer is not None else None,
        thoughts_tokens=request.thoughts_token_count if answer is not None else None,
    )


def text_response(model: str, text: str, finish_reason: str, usage: Usage) -> dict[str, Any]:
    return _response(
        model,
        [
            {
                "content": {"parts": [{"text": text}], "role": "model"},
                "finishReason": finish_reason,
                "index": 0,
            }
        ],
        usage,
    )


def safety_blocked_response(model: str, usage: Usage) -> dict[str, Any]:
    # a blocked candidate carries no content at all, only the reason and the ratings
    candidate = {"finishReason": "SAFETY", "index": 0, "safetyRatings": _SAFETY_RATINGS_BLOCKED}
    return _response(model, [candidate], usage)


def prompt_blocked_response(model: str, usage: Usage) -> dict[str, Any]:
    return {
        "promptFeedback": {"blockReason": "SAFETY", "safetyRatings": _SAFETY_RATINGS_BLOCKED},
        "usageMetadata": usage.to_json(),
        "modelVersion": model,
        "responseId": new_response_id(),
    }


def empty_response(model: str, usage: Usage) -> dict[str, Any]:
    # seen from 2.5 models: STOP with a content that has a role but no parts
    return _response(
        model, [{"content": {"role": "model"}, "finishReason": "STOP", "index": 0}], usage
    )


def _response(model: str, candidates: list[dict[str, Any]], usage: Usage) -> dict[str, Any]:
    return {
        "candidates": candidates,
        "usageMetadata": usage.to_json(),
        "modelVersion": model,
        "responseId": new_response_id(),
    }
