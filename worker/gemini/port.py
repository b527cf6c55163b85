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


class ModelApi(Protocol):
    """Asking the model: what a job's answer comes from."""

    def generate(
        self,
        *,
        model: str,
        images: Sequence[ImagePart],
        request: ModelRequest,
        options: GenerationOptions,
    ) -> ModelAnswer: ...
    def warm_up(self) -> None: ...


class FilesApi(Protocol):
    """The File API: uploads a request names by URI (`worker.pipeline.request_images`,
    `gvw files`)."""

    def upload_file(self, data: bytes, *, mime_type: str, display_name: str) -> RemoteFile: ...
    def get_file(self, name: str) -> RemoteFile: ...
    def delete_file(self, name: str) -> None: ...
    def list_files(self) -> Iterator[RemoteFile]: ...
    def wait_until_active(
        self, file: RemoteFile, *, timeout_s: float, first_pause_s: float = 0.2
    ) -> RemoteFile: ...


class BatchApi(Protocol):
    """The Batch API: a parked request's wire form, and the batches the follower runs."""

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


class Gemini(ModelApi, FilesApi, BatchApi, Protocol):
    """All three (`worker.gemini.GeminiGateway`): what the composition root holds; each
    user is typed by the role it needs."""
