"""The model as the rest of the worker sees it: `GeminiGateway`, or any stand-in."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any, Protocol

from tasks.base import ModelRequest
from tasks.errors import GvwError
from worker.gemini.records import (
    GenerationOptions,
    ImagePart,
    ModelAnswer,
    RemoteBatch,
    RemoteFile,
)


class Gemini(Protocol):
    """The model and its File API (`worker.gemini.GeminiGateway`)."""

    def generate(
        self,
        *,
        model: str,
        images: Sequence[ImagePart],
        request: ModelRequest,
        options: GenerationOptions,
    ) -> ModelAnswer: ...
    def upload_file(self, data: bytes, *, mime_type: str, display_name: str) -> RemoteFile: ...
    def get_file(self, name: str) -> RemoteFile: ...
    def delete_file(self, name: str) -> None: ...
    def list_files(self) -> Iterator[RemoteFile]: ...
    def wait_until_active(
        self, file: RemoteFile, *, timeout_s: float, first_pause_s: float = 0.2
    ) -> RemoteFile: ...
    def warm_up(self) -> None: ...
    def batch_request(
        self,
        *,
        model: str,
        images: Sequence[ImagePart],
        request: ModelRequest,
        options: GenerationOptions,
        key: str,
    ) -> dict[str, Any]: ...
    def create_batch(
        self,
        *,
        model: str,
        requests: Sequence[dict[str, Any]],
        display_name: str,
        inline_max_bytes: int,
    ) -> tuple[RemoteBatch, str]: ...
    def get_batch(self, name: str) -> RemoteBatch: ...
    def find_batch(self, display_name: str, *, max_pages: int = 10) -> RemoteBatch | None: ...
    def cancel_batch(self, name: str) -> None: ...
    def batch_answers(self, name: str) -> dict[str, ModelAnswer | GvwError]: ...
