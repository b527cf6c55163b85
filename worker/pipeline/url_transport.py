"""GVW_TRANSPORT=url: Gemini fetches an S3 object itself, through a pre-signed URL.

The worker reads only the object's first bytes (one ranged GET, `GVW_URL_HEADER_BYTES`):
enough to know its type, its size in pixels and its EXIF orientation. An image Gemini can
take as stored (a JPEG, upright, in a plain colour mode, small enough for the URL limit,
needing no reduced copy) goes as a URL; anything else returns None, and the pipeline
takes the bytes way (download, prepare, inline or File API). Why only JPEG:
`worker.images.prepare.read_header`.

A pre-signed URL is a bearer credential for its lifetime (`GVW_URL_TTL_S`): it lives in
the request to Gemini and nowhere else. Records keep the object's S3 URI, ETag, version
and stored checksum; logs, metrics and error messages never see the URL
(`worker.observability` and `worker.gemini.errors` scrub any that would).
"""

from __future__ import annotations

import base64
import binascii
import logging
from dataclasses import dataclass

from worker.gemini.records import ImagePart
from worker.images.prepare import ImageFacts, read_header
from worker.images.sniff import MIME_BY_FORMAT
from worker.observability import URL_FALLBACKS
from worker.settings import Settings
from worker.storage import S3_SCHEME
from worker.storage.port import Stores

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class RemoteImage:
    facts: ImageFacts
    part: ImagePart  # file_uri: the pre-signed URL


def remote_image(
    stores: Stores,
    uri: str,
    settings: Settings,
    *,
    fit_within_px: int,
    job_pixels_left: int | None,
) -> RemoteImage | None:
    """``uri`` as a URL Gemini fetches, or None when it must go the bytes way. Raises
    what reading the object raises (InputNotFound, ...) and TooLarge from its header."""
    if not uri.startswith(S3_SCHEME):
        return None
    head = stores.read_head(uri, max_bytes=settings.gvw_url_header_bytes)
    if head.complete:
        return _bytes_way("small")  # already read whole: sent inline, nothing to fetch
    if head.size_bytes > settings.gvw_url_max_bytes:
        return _bytes_way("too_large_for_url")
    header = read_header(
        head.data, max_pixels=settings.gvw_max_image_pixels, job_pixels_left=job_pixels_left
    )
    if header is None:
        return _bytes_way("header")
    if not header.sendable_as_is:
        return _bytes_way("needs_preparing")
    if fit_within_px > 0 and max(header.width_px, header.height_px) > fit_within_px:
        return _bytes_way("reduced_copy")
    url = stores.presign_get(uri, ttl_s=settings.gvw_url_ttl_s, version_id=head.version_id)
    if url is None:
        return _bytes_way("no_url")
    sha256 = _hex_sha256(head.checksum_sha256)
    mime_type = MIME_BY_FORMAT[header.source_format]
    size = (header.width_px, header.height_px)
    facts = ImageFacts(
        uri=uri,
        sha256=sha256,
        mime_type=mime_type,
        width_px=header.width_px,
        height_px=header.height_px,
        sent_width_height_px=size,
        decoder_warnings=(),
        # the answer cache's key: the content's hash where S3 holds one, else its ETag
        # (an MD5 of the content, or of its parts for a multipart upload) and size
        sent_sha256=sha256 or f"etag:{head.etag}:{head.size_bytes}",
        object_etag=head.etag,
        object_version_id=head.version_id,
        object_size_bytes=head.size_bytes,
        object_checksum_sha256=head.checksum_sha256,
    )
    return RemoteImage(facts, ImagePart(mime_type, file_uri=url, fetched=True))


def _bytes_way(reason: str) -> RemoteImage | None:
    URL_FALLBACKS.labels(reason).inc()
    return None


def _hex_sha256(checksum: str | None) -> str | None:
    """S3's ChecksumSHA256 (base64) as hex, when it is the whole object's: a multipart
    upload's composite checksum ("...-N") is not the content's hash."""
    if not checksum or "-" in checksum:
        return None
    try:
        digest = base64.b64decode(checksum, validate=True)
    except (binascii.Error, ValueError):
        return None
    return digest.hex() if len(digest) == 32 else None
