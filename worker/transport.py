"""How each image of a request reaches Gemini: inline bytes, or a File API URI shared by
the fleet through the file cache.

The plan (which image goes which way) is pure (`tasks.transport_plan`); this module
carries it out: cache look-ups, single-flight uploads, waiting for ACTIVE, and the
recovery when Gemini no longer knows a cached file.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass
from functools import partial

from google.genai import types

from tasks.transport_plan import Transport, plan_transports
from worker.file_cache import CachedFile, FileCache
from worker.gemini import GeminiGateway, ImagePart
from worker.images import PreparedImage
from worker.observability import FILE_EVENTS

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class SentImage:
    part: ImagePart
    transport: Transport
    file: CachedFile | None = None


class ImageSender:
    def __init__(
        self,
        gemini: GeminiGateway,
        cache: FileCache,
        *,
        inline_max_bytes: int,
        active_timeout_s: float,
    ) -> None:
        self._gemini = gemini
        self._cache = cache
        self._inline_max_bytes = inline_max_bytes
        self._active_timeout_s = active_timeout_s

    def send_plan(
        self, prepared: Sequence[PreparedImage], *, prompt_bytes: int, job_id: str
    ) -> list[SentImage]:
        cached = [self._cache.get(p.sent_sha256) for p in prepared]
        plan = plan_transports(
            [len(p.data) for p in prepared],
            [entry is not None for entry in cached],
            prompt_bytes=prompt_bytes,
            inline_max_bytes=self._inline_max_bytes,
        )
        sent: list[SentImage] = []
        for image, transport, entry in zip(prepared, plan, cached, strict=True):
            if transport == "inline":
                sent.append(SentImage(ImagePart(image.mime_type, data=image.data), "inline"))
                continue
            if entry is None:
                entry, _hit = self._cache.get_or_upload(
                    image.sent_sha256, partial(self._upload, image, job_id)
                )
            else:
                self._count("cache_hits")
            sent.append(_by_uri(entry))
        return sent

    def replace_files(
        self, prepared: Sequence[PreparedImage], sent: Sequence[SentImage], *, job_id: str
    ) -> list[SentImage]:
        """Gemini refused a file URI (403: expired, deleted or foreign; 404): evict every
        file of this request from the cache and upload them again, once."""
        fresh: list[SentImage] = []
        for image, item in zip(prepared, sent, strict=True):
            if item.transport != "file_api":
                fresh.append(item)
                continue
            # only the refused upload: another job may have replaced it already
            self._cache.evict(image.sent_sha256, uri=item.file.uri if item.file else None)
            self._count("reuploads_after_rejection")
            log.warning(
                "file URI refused by Gemini, uploading again",
                extra={"job_id": job_id, "file": item.file.name if item.file else None},
            )
            entry, _hit = self._cache.get_or_upload(
                image.sent_sha256, partial(self._upload, image, job_id)
            )
            fresh.append(_by_uri(entry))
        return fresh

    def wait_files_active(self, sent: Sequence[SentImage], *, job_id: str) -> None:
        """Gemini said a file is not ACTIVE yet (400 FAILED_PRECONDITION): wait for it."""
        for item in sent:
            if item.file is not None:
                self._count("not_active_waits")
                log.info(
                    "waiting for file to become ACTIVE",
                    extra={"job_id": job_id, "file": item.file.name},
                )
                self._gemini.wait_until_active(
                    self._gemini.get_file(item.file.name), timeout_s=self._active_timeout_s
                )

    def _count(self, event: str) -> None:
        self._cache.count(event)
        FILE_EVENTS.labels(event).inc()

    def _upload(self, image: PreparedImage, job_id: str) -> CachedFile:
        started = time.monotonic()
        uploaded = self._gemini.upload_file(
            image.data,
            mime_type=image.mime_type,
            display_name=f"gvw-{image.sent_sha256[:16]}",
        )
        active = self._gemini.wait_until_active(uploaded, timeout_s=self._active_timeout_s)
        entry = _entry(image, active)
        log.info(
            "uploaded image to the File API",
            extra={
                "job_id": job_id,
                "file": entry.name,
                "size_bytes": entry.size_bytes,
                "seconds": round(time.monotonic() - started, 3),
            },
        )
        return entry


def _by_uri(entry: CachedFile) -> SentImage:
    return SentImage(ImagePart(entry.mime_type, file_uri=entry.uri), "file_api", entry)


def _entry(image: PreparedImage, file: types.File) -> CachedFile:
    now = time.time()
    # Gemini deletes uploads after 48 h; trust its expirationTime, assume 48 h without one
    expires_at = file.expiration_time.timestamp() if file.expiration_time else now + 48 * 3600
    return CachedFile(
        sha256=image.sent_sha256,
        name=file.name or "",
        uri=file.uri or "",
        mime_type=file.mime_type or image.mime_type,
        size_bytes=int(file.size_bytes or len(image.data)),
        expires_at=expires_at,
        uploaded_at=now,
    )
