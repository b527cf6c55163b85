"""The `ObjectStore` port: bytes by URI, the same for S3 and local files.

Adapters: `worker.storage.s3.S3Store`, `worker.storage.local.LocalStore`, and
`worker.storage.router.StoreRouter`, which hands each call to the adapter of its URI's
scheme. Every method raises only errors of `tasks.errors`.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Protocol

from tasks.errors import TooLarge


@dataclass(frozen=True)
class ObjectInfo:
    uri: str
    size_bytes: int
    etag: str  # S3's ETag; size and mtime for local files


@dataclass(frozen=True)
class ObjectHead:
    """The first bytes of an object and what the store says about the whole of it."""

    data: bytes  # at most the bytes asked for; the whole object when it is that small
    size_bytes: int
    etag: str  # S3's ETag, quotes included; size and mtime for local files
    version_id: str | None = None
    checksum_sha256: str | None = None  # S3's stored checksum (base64), where it holds one

    @property
    def complete(self) -> bool:
        return len(self.data) >= self.size_bytes


class ObjectStore(Protocol):
    """Bytes by URI. Every method raises only errors from `tasks.errors`."""

    def head_size(self, uri: str) -> int:
        """Size of the object in bytes; InputNotFound when it does not exist."""
        ...

    def get_bytes(self, uri: str, *, max_bytes: int) -> bytes:
        """The whole object, refused with TooLarge above ``max_bytes`` before it is read."""
        ...

    def put_bytes(self, uri: str, data: bytes, *, content_type: str) -> None:
        """Write (or overwrite) the object; readers see the old or the new bytes, never half."""
        ...

    def create_exclusive(self, uri: str, data: bytes, *, content_type: str) -> bool:
        """Create the object only if it does not exist: True if this call created it,
        False if it already existed (the existing object is left untouched)."""
        ...

    def exists(self, uri: str) -> bool: ...

    def delete(self, uri: str) -> None:
        """Remove the object; a missing object is not an error."""
        ...

    def list_prefix(self, uri_prefix: str) -> Iterator[str]:
        """URIs of every object whose URI starts with ``uri_prefix``, in key order."""
        ...

    def list_objects(self, uri_prefix: str) -> Iterator[ObjectInfo]:
        """`list_prefix` with each object's size and version tag (ETag, or size and mtime
        for a file), for deterministic job ids."""
        ...

    def read_head(self, uri: str, *, max_bytes: int) -> ObjectHead:
        """The object's first ``max_bytes`` (one ranged read) and its size and version."""
        ...

    def presign_get(self, uri: str, *, ttl_s: int, version_id: str | None) -> str | None:
        """A URL anyone holding it can GET the object with for ``ttl_s`` seconds (pinned
        to ``version_id`` when given), or None when the store has no such URLs."""
        ...


class Stores(ObjectStore, Protocol):
    """An `ObjectStore` for every scheme a job may name (`StoreRouter`): what the job's
    flow sees. Beyond one store: many lookups at once, and the S3 client built early."""

    def exists_each(self, uris: Sequence[str]) -> list[bool]:
        """`exists` of every URI, in order (S3 lookups concurrently)."""
        ...

    def connect_s3(self) -> None:
        """Build the S3 client now, not on the first ``s3://`` URI a job names."""
        ...


def too_large(uri: str, size_bytes: int, max_bytes: int) -> TooLarge:
    return TooLarge(
        f"{uri} is {size_bytes} bytes, above the limit of {max_bytes}",
        size_bytes=size_bytes,
        max_bytes=max_bytes,
    )
