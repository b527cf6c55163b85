"""How each image of a request reaches Gemini: inline bytes, or a File API URI shared by
the fleet through the file cache.

The plan (which image goes which way) is pure (`tasks.transport_plan`); this module
carries it out: cache look-ups, single-flight uploads, waiting for ACTIVE, and the
recovery when Gemini no longer knows a cached file.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial

from tasks.errors import StorageUnavailable, TooLarge
from tasks.transport_plan import InlinePlanner, Transport, TransportMode
from worker.fleet.file_cache import CachedFile, FileCache
from worker.gemini.port import FilesApi
from worker.gemini.records import ImagePart, RemoteFile
from worker.images.prepare import PreparedImage
from worker.observability import FILE_EVENTS

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class SentImage:
    part: ImagePart
    transport: Transport
    file: CachedFile | None = None


class ImageSender:
    """Builds one request's images at a time (`start`); holds the fleet's file cache and
    the Gemini gateway for all of them."""

    def __init__(
        self,
        gemini: FilesApi,
        cache: FileCache,
        *,
        inline_max_bytes: int,
        active_timeout_s: float,
    ) -> None:
        self._gemini = gemini
        self._cache = cache
        self.inline_max_bytes = inline_max_bytes
        self._active_timeout_s = active_timeout_s

    def start(
        self,
        *,
        prompt_bytes: int,
        job_id: str,
        refetch: Callable[[int], PreparedImage],
        defer_uploads: bool = False,
        mode: TransportMode = "auto",
        min_file_life_s: float = 0.0,
    ) -> RequestImages:
        """A request's images, added one at a time. ``refetch(index)`` prepares image
        ``index`` again, for the rare re-upload after Gemini refused a cached file.

        ``defer_uploads``: the request may never be sent (the answer cache may hold its
        answer), so images that outgrow the inline request are let go unuploaded and
        uploaded by `sent`, prepared again: a cache hit costs no upload, a miss one more
        read of the images that go by File API.

        ``mode`` (GVW_TRANSPORT): "auto" and "url" plan by size; "inline" never uploads
        (a request past the inline limit is TooLarge); "file_api" uploads every image.

        ``min_file_life_s``: a cached upload Gemini deletes sooner than this is uploaded
        again (a batch request is read up to a day after it is built)."""
        planner = InlinePlanner(prompt_bytes=prompt_bytes, inline_max_bytes=self.inline_max_bytes)
        return RequestImages(
            self,
            planner,
            job_id,
            refetch,
            defer_uploads=defer_uploads,
            mode=mode,
            min_file_life_s=min_file_life_s,
        )

    def count(self, event: str) -> None:
        self._cache.count(event)
        FILE_EVENTS.labels(event).inc()

    def shared_upload(self, image: PreparedImage, job_id: str) -> CachedFile:
        """The image's File API upload: the fleet's cached one, or a new one (single
        flight: one worker uploads, the others wait for it)."""
        entry, _hit = self._cache.get_or_upload(
            image.sent_sha256, partial(self._upload, image, job_id)
        )
        return entry

    def cached(self, sent_sha256: str) -> CachedFile | None:
        return self._cache.get(sent_sha256)

    def evict(self, sent_sha256: str, uri: str | None) -> None:
        self._cache.evict(sent_sha256, uri=uri)

    def wait_active(self, file: CachedFile) -> None:
        self._gemini.wait_until_active(
            self._gemini.get_file(file.name), timeout_s=self._active_timeout_s
        )

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


class RequestImages:
    """The images of one request, gathered one at a time so that a job holds at most one
    request's worth of image bytes (`tasks.transport_plan.InlinePlanner`).

    An image already uploaded by the fleet goes by its URI whatever its size; the others
    are held for the inline request, and whenever it would pass the inline limit the
    largest held ones are uploaded at once and their bytes let go.
    """

    def __init__(
        self,
        sender: ImageSender,
        planner: InlinePlanner,
        job_id: str,
        refetch: Callable[[int], PreparedImage],
        *,
        defer_uploads: bool = False,
        mode: TransportMode = "auto",
        min_file_life_s: float = 0.0,
    ) -> None:
        self._sender = sender
        self._min_file_life_s = min_file_life_s
        self._planner = planner
        self._job_id = job_id
        self._refetch = refetch
        self._defer_uploads = defer_uploads
        self._mode = mode
        self._held: dict[int, PreparedImage] = {}
        self._by_uri: dict[int, SentImage] = {}
        self._by_url: dict[int, SentImage] = {}
        # what happened on the way, for the result's warnings
        self.notes: list[str] = []
        # index -> sha256 of images read after all (a URL Gemini could not fetch)
        self.read_back: dict[int, str] = {}
        # index -> sent_sha256 of images let go before their upload (defer_uploads)
        self._deferred: dict[int, str] = {}
        self._count = 0

    def add(self, image: PreparedImage) -> None:
        """The next image, as bytes: inline or through the File API."""
        index = self._count
        self._count += 1
        self._place(index, image)

    def add_url(self, part: ImagePart) -> None:
        """The next image, as a URL Gemini fetches itself (`worker.pipeline.url_transport`)."""
        self._by_url[self._count] = SentImage(part, "url")
        self._count += 1

    @property
    def uses_urls(self) -> bool:
        return bool(self._by_url)

    def _place(self, index: int, image: PreparedImage) -> None:
        entry = self._sender.cached(image.sent_sha256)
        if entry is not None and entry.expires_at - time.time() < self._min_file_life_s:
            # too close to its deletion for this request: a new upload replaces it in
            # the cache (requests in flight keep the old URI until Gemini deletes it)
            self._sender.evict(image.sent_sha256, entry.uri)
            entry = None
        if entry is not None:
            self._sender.count("cache_hits")
            self._by_uri[index] = _by_uri(entry)
            return
        if self._mode == "file_api":
            self._upload(index, image)
            return
        self._held[index] = image
        moved = self._planner.add(index, len(image.data))
        if moved and self._mode == "inline":
            raise TooLarge(
                f"the request's images pass the inline limit (GVW_INLINE_MAX_BYTES="
                f"{self._sender.inline_max_bytes}) and GVW_TRANSPORT=inline never uses the "
                "File API"
            )
        for index_moved in moved:
            self._upload(index_moved, self._held.pop(index_moved))

    def _upload(self, index: int, image: PreparedImage) -> None:
        if self._defer_uploads:
            self._deferred[index] = image.sent_sha256
        else:
            self._by_uri[index] = _by_uri(self._sender.shared_upload(image, self._job_id))

    def replace_urls(self, reason: str) -> list[SentImage]:
        """Gemini could not fetch a URL (expired, unreachable): send those images as
        bytes instead, prepared now, once. Each gets a note for the result, and its
        content hash (`read_back`), now that the worker has the bytes."""
        for index in sorted(self._by_url):
            del self._by_url[index]
            image = self._refetch(index)
            self.read_back[index] = image.sha256
            self.notes.append(
                f"image {index}: Gemini could not fetch it by URL ({reason[:300]}); "
                "sent as bytes instead"
            )
            self._place(index, image)
        return self.sent()

    def sent(self) -> list[SentImage]:
        """Every image as it goes in the request, in the job's order."""
        for index, sent_sha256 in sorted(self._deferred.items()):
            image = self._refetch(index)
            if image.sent_sha256 != sent_sha256:
                # the object changed under the job: what was looked up is not what
                # would be sent. The retry reads every image again.
                raise StorageUnavailable(f"image {index} changed while the job was running")
            self._by_uri[index] = _by_uri(self._sender.shared_upload(image, self._job_id))
            del self._deferred[index]
        return [
            self._by_uri.get(i)
            or self._by_url.get(i)
            or SentImage(ImagePart(self._held[i].mime_type, data=self._held[i].data), "inline")
            for i in range(self._count)
        ]

    def replace_files(self) -> list[SentImage]:
        """Gemini refused a file URI (403: expired, deleted or foreign; 404): evict every
        file of this request from the cache and upload them again, once."""
        for index, item in sorted(self._by_uri.items()):
            # only the refused upload: another job may have replaced it already
            self._sender.evict(
                item.file.sha256 if item.file else "", uri=item.file.uri if item.file else None
            )
            self._sender.count("reuploads_after_rejection")
            log.warning(
                "file URI refused by Gemini, uploading again",
                extra={"job_id": self._job_id, "file": item.file.name if item.file else None},
            )
            # the bytes were let go after the first upload: prepare the image again
            image = self._refetch(index)
            self._by_uri[index] = _by_uri(self._sender.shared_upload(image, self._job_id))
        return self.sent()

    def wait_files_active(self) -> None:
        """Gemini said a file is not ACTIVE yet (400 FAILED_PRECONDITION): wait for it."""
        for item in self._by_uri.values():
            if item.file is not None:
                self._sender.count("not_active_waits")
                log.info(
                    "waiting for file to become ACTIVE",
                    extra={"job_id": self._job_id, "file": item.file.name},
                )
                self._sender.wait_active(item.file)


def _by_uri(entry: CachedFile) -> SentImage:
    return SentImage(ImagePart(entry.mime_type, file_uri=entry.uri), "file_api", entry)


def _entry(image: PreparedImage, file: RemoteFile) -> CachedFile:
    now = time.time()
    # Gemini deletes uploads after 48 h; trust its expirationTime, assume 48 h without one
    return CachedFile(
        sha256=image.sent_sha256,
        name=file.name,
        uri=file.uri,
        mime_type=file.mime_type or image.mime_type,
        size_bytes=file.size_bytes or len(image.data),
        expires_at=file.expires_at if file.expires_at is not None else now + 48 * 3600,
        uploaded_at=now,
    )
