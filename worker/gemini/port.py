"""The model as the rest of the worker sees it: `GeminiGateway`, or any stand-in."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Protocol

from tasks.base import ModelRequest
from worker.gemini.records import GenerationOptions, ImagePart, ModelAnswer, RemoteFile


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
