"""The File API: resumable upload sessions and the uploaded files, in memory.

Upload protocol (Google resumable, as `google-genai` drives it):
1. `POST /upload/v1beta/files` with `X-Goog-Upload-Command: start`, the declared size and
   type in `X-Goog-Upload-Header-Content-*` and `{"file": {...}}` as JSON; the answer
   carries `x-goog-upload-url` (with an `upload_id`) and `x-goog-upload-status: active`.
2. `POST <upload url>` with `X-Goog-Upload-Command: upload` (more to come) or
   `upload, finalize` (last chunk), `X-Goog-Upload-Offset` = bytes sent so far. The last
   answer is `{"file": {...}}` with `x-goog-upload-status: final`.
Also `query` (how much arrived) and `cancel`.

A file is PROCESSING until `processing_delay_s` after its upload, then ACTIVE; it expires at
`expirationTime`. Unknown, deleted and expired files all look the same from outside: the
API answers 403 PERMISSION_DENIED for each, never 404.
"""

from __future__ import annotations

import base64
import hashlib
import re
import secrets
import string
import threading
import time
from dataclasses import dataclass, field
from typing import Any

from worker.emulator import errors
from worker.emulator.protocol import rfc3339_from_ns

FILE_ID_RE = re.compile(r"[a-z0-9][a-z0-9-]{0,39}")
_ID_ALPHABET = string.ascii_lowercase + string.digits
LIST_PAGE_SIZE_DEFAULT = 10
LIST_PAGE_SIZE_MAX = 100
MAX_FILE_BYTES = 2 * 1024**3


@dataclass
class StoredFile:
    file_id: str
    display_name: str | None
    mime_type: str
    data: bytes = field(repr=False)
    sha256_hex: str
    uri: str
    create_ns: int
    active_ns: int
    expire_ns: int
    generated: bool = False  # written by the API (a batch's results): downloadable

    @property
    def name(self) -> str:
        return f"files/{self.file_id}"

    def state(self, now_ns: int) -> str:
        return "ACTIVE" if now_ns >= self.active_ns else "PROCESSING"

    def to_json(self, now_ns: int) -> dict[str, Any]:
        obj: dict[str, Any] = {"name": self.name}
        if self.display_name is not None:
            obj["displayName"] = self.display_name
        obj.update(
            {
                "mimeType": self.mime_type,
                "sizeBytes": str(len(self.data)),  # int64 travels as a string
                "createTime": rfc3339_from_ns(self.create_ns),
                "updateTime": rfc3339_from_ns(max(self.create_ns, min(now_ns, self.active_ns))),
                "expirationTime": rfc3339_from_ns(self.expire_ns),
                # base64 of the *hex* digest text, as the real API does
                "sha256Hash": base64.b64encode(self.sha256_hex.encode("ascii")).decode("ascii"),
                "uri": self.uri,
                "state": self.state(now_ns),
                "source": "GENERATED" if self.generated else "UPLOADED",
            }
        )
        if self.generated:
            obj["downloadUri"] = f"{self.uri}:download?alt=media"
        return obj


@dataclass
class UploadSession:
    upload_id: str
    file_id: str
    display_name: str | None
    mime_type: str
    declared_size: int | None
    api_base_url: str
    buffer: bytearray = field(default_factory=bytearray, repr=False)


@dataclass
class ChunkResult:
    received_bytes: int
    file: StoredFile | None  # set when the upload was finalized


class FileStore:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._files: dict[str, StoredFile] = {}
        self._sessions: dict[str, UploadSession] = {}

    def reset(self) -> None:
        with self._lock:
            self._files.clear()
            self._sessions.clear()

    def start_upload(
        self,
        file_meta: dict[str, Any],
        declared_size: int | None,
        declared_mime_type: str | None,
        api_base_url: str,
    ) -> UploadSession:
        requested_name = file_meta.get("name")
        mime_type = file_meta.get("mimeType") or file_meta.get("mime_type") or declared_mime_type
        display_name = file_meta.get("displayName") or file_meta.get("display_name")
        if declared_size is not None and declared_size > MAX_FILE_BYTES:
            raise errors.invalid_argument(f"File size exceeds the limit of {MAX_FILE_BYTES} bytes.")
        if not mime_type:
            raise errors.invalid_argument("Mime type of the file is required.")
        with self._lock:
            if requested_name:
                file_id = str(requested_name).removeprefix("files/")
                if not FILE_ID_RE.fullmatch(file_id):
                    raise errors.invalid_argument(f"Invalid file name: {requested_name}")
                taken = {s.file_id for s in self._sessions.values()}
                if file_id in self._files or file_id in taken:
                    raise errors.file_already_exists(file_id)
            else:
                file_id = self._new_file_id_locked()
            session = UploadSession(
                upload_id=secrets.token_urlsafe(24),
                file_id=file_id,
                display_name=str(display_name) if display_name is not None else None,
                mime_type=str(mime_type),
                declared_size=declared_size,
                api_base_url=api_base_url,
            )
            self._sessions[session.upload_id] = session
            return session

    def upload_chunk(
        self,
        upload_id: str,
        offset: int | None,
        chunk: bytes,
        finalize: bool,
        processing_delay_s: float,
        file_ttl_s: float,
    ) -> ChunkResult:
        with self._lock:
            session = self._session_locked(upload_id)
            received = len(session.buffer)
            if offset is not None and offset != received:
                raise errors.ApiError(
                    400,
                    "INVALID_ARGUMENT",
                    f"Upload offset {offset} does not match the {received} bytes received.",
                    # the session stays open: the client can `query` and resume
                    headers={
                        "x-goog-upload-status": "active",
                        "x-goog-upload-size-received": str(received),
                    },
                )
            session.buffer += chunk
            if not finalize:
                return ChunkResult(received_bytes=len(session.buffer), file=None)
            del self._sessions[upload_id]
            if session.declared_size is not None and session.declared_size != len(session.buffer):
                raise errors.ApiError(
                    400,
                    "INVALID_ARGUMENT",
                    f"Uploaded {len(session.buffer)} bytes but {session.declared_size} were "
                    "declared.",
                    headers={"x-goog-upload-status": "final"},
                )
            now_ns = time.time_ns()
            data = bytes(session.buffer)
            stored = StoredFile(
                file_id=session.file_id,
                display_name=session.display_name,
                mime_type=session.mime_type,
                data=data,
                sha256_hex=hashlib.sha256(data).hexdigest(),
                uri=f"{session.api_base_url}/v1beta/files/{session.file_id}",
                create_ns=now_ns,
                active_ns=now_ns + int(processing_delay_s * 1e9),
                expire_ns=now_ns + int(file_ttl_s * 1e9),
            )
            self._files[stored.file_id] = stored
            return ChunkResult(received_bytes=len(data), file=stored)

    def add_generated(
        self, data: bytes, *, mime_type: str, display_name: str, base_url: str, ttl_s: float
    ) -> StoredFile:
        """A file the API wrote itself (a batch's results), ACTIVE at once."""
        now_ns = time.time_ns()
        with self._lock:
            file_id = self._new_file_id_locked()
            stored = StoredFile(
                file_id=file_id,
                display_name=display_name,
                mime_type=mime_type,
                data=data,
                sha256_hex=hashlib.sha256(data).hexdigest(),
                uri=f"{base_url}/v1beta/files/{file_id}",
                create_ns=now_ns,
                active_ns=now_ns,
                expire_ns=now_ns + int(ttl_s * 1e9),
                generated=True,
            )
            self._files[file_id] = stored
        return stored

    def received_bytes(self, upload_id: str) -> int:
        with self._lock:
            return len(self._session_locked(upload_id).buffer)

    def cancel_upload(self, upload_id: str) -> None:
        with self._lock:
            self._session_locked(upload_id)
            del self._sessions[upload_id]

    def get(self, file_id: str) -> StoredFile:
        """The live file, or 403 (unknown, deleted and expired all look alike)."""
        with self._lock:
            return self._live_locked(file_id, time.time_ns())

    def get_for_generation(self, file_id: str) -> StoredFile:
        """The file for use in a prompt: 403 if gone, 400 FAILED_PRECONDITION if not ACTIVE."""
        now_ns = time.time_ns()
        with self._lock:
            stored = self._live_locked(file_id, now_ns)
        if stored.state(now_ns) != "ACTIVE":
            raise errors.file_not_active(file_id)
        return stored

    def delete(self, file_id: str) -> None:
        with self._lock:
            self._live_locked(file_id, time.time_ns())
            del self._files[file_id]

    def list_page(
        self, page_size: int | None, page_token: str | None
    ) -> tuple[list[StoredFile], str | None]:
        size = LIST_PAGE_SIZE_DEFAULT if not page_size else min(page_size, LIST_PAGE_SIZE_MAX)
        start = 0
        if page_token:
            try:
                start = int(base64.urlsafe_b64decode(page_token.encode("ascii")).decode("ascii"))
            except ValueError as exc:
                raise errors.invalid_argument("Invalid page token.") from exc
        now_ns = time.time_ns()
        with self._lock:
            self._drop_expired_locked(now_ns)
            ordered = sorted(self._files.values(), key=lambda f: (f.create_ns, f.file_id))
        page = ordered[start : start + size]
        next_start = start + size
        next_token = None
        if next_start < len(ordered):
            next_token = base64.urlsafe_b64encode(str(next_start).encode("ascii")).decode("ascii")
        return page, next_token

    def expire(self, names: list[str] | None) -> list[str]:
        """Expire files now (all when `names` is None); returns the names expired."""
        now_ns = time.time_ns()
        with self._lock:
            ids = list(self._files) if names is None else [_file_id(n) for n in names]
            expired = []
            for file_id in ids:
                stored = self._files.get(file_id)
                if stored is not None and stored.expire_ns > now_ns:
                    stored.expire_ns = now_ns
                    expired.append(stored.name)
            return expired

    def activate(self, names: list[str] | None) -> list[str]:
        """End PROCESSING now for the given files (all when `names` is None)."""
        now_ns = time.time_ns()
        with self._lock:
            ids = list(self._files) if names is None else [_file_id(n) for n in names]
            activated = []
            for file_id in ids:
                stored = self._files.get(file_id)
                if stored is not None and stored.active_ns > now_ns:
                    stored.active_ns = now_ns
                    activated.append(stored.name)
            return activated

    def _live_locked(self, file_id: str, now_ns: int) -> StoredFile:
        stored = self._files.get(file_id)
        if stored is None:
            raise errors.file_permission_denied(file_id)
        if stored.expire_ns <= now_ns:
            del self._files[file_id]
            raise errors.file_permission_denied(file_id)
        return stored

    def _drop_expired_locked(self, now_ns: int) -> None:
        for file_id in [i for i, f in self._files.items() if f.expire_ns <= now_ns]:
            del self._files[file_id]

    def _session_locked(self, upload_id: str) -> UploadSession:
        session = self._sessions.get(upload_id)
        if session is None:
            # "final" stops the SDK, which otherwise retries a chunk without that header
            raise errors.ApiError(
                404,
                "NOT_FOUND",
                "Upload session not found.",  # wording ours
                headers={"x-goog-upload-status": "final"},
            )
        return session

    def _new_file_id_locked(self) -> str:
        while True:
            file_id = "".join(secrets.choice(_ID_ALPHABET) for _ in range(12))
            if file_id not in self._files:
                return file_id


def _file_id(name: str) -> str:
    return name.rsplit("files/", 1)[-1]
