"""`StoreRouter`: one `ObjectStore` for every scheme, and small readers over any store."""

from __future__ import annotations

import json
import threading
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Final

from tasks.errors import InputNotAllowed, InvalidJob
from worker.storage.local import LocalStore
from worker.storage.port import ObjectHead, ObjectInfo, ObjectStore
from worker.storage.s3 import S3Store
from worker.storage.uris import FILE_SCHEME, S3_SCHEME

# Concurrent existence checks per process (`StoreRouter.exists_each`): a job makes two at
# a time, and a worker process runs a handful of jobs at once.
_LOOKUP_THREADS: Final = 8


class StoreRouter:
    """One `ObjectStore` for every scheme: each call goes to the adapter for its URI.

    Build one per process (after any fork); the S3 client is created on the first
    ``s3://`` URI, so a process that only touches files never loads boto3.
    """

    def __init__(
        self,
        *,
        connect_timeout_s: float = 5.0,
        read_timeout_s: float = 30.0,
        max_attempts: int = 4,
        max_pool_connections: int = 32,
        list_page_size: int = 1000,
        s3_factory: Callable[[], ObjectStore] | None = None,
        local: ObjectStore | None = None,
    ) -> None:
        self._s3_factory: Callable[[], ObjectStore] = s3_factory or (
            lambda: S3Store(
                connect_timeout_s=connect_timeout_s,
                read_timeout_s=read_timeout_s,
                max_attempts=max_attempts,
                max_pool_connections=max_pool_connections,
                list_page_size=list_page_size,
            )
        )
        self._s3: ObjectStore | None = None
        self._s3_lock = threading.Lock()
        self._lookup_pool: ThreadPoolExecutor | None = None
        self._local: ObjectStore = local or LocalStore()

    def for_uri(self, uri: str) -> ObjectStore:
        if uri.startswith(S3_SCHEME):
            return self._s3_store()
        if uri.startswith(FILE_SCHEME):
            return self._local
        scheme = uri.partition("://")[0] if "://" in uri else uri[:16]
        raise InputNotAllowed(
            f"unsupported storage URI {uri[:200]!r}: scheme {scheme!r} is neither s3:// nor file://"
        )

    def connect_s3(self) -> None:
        """Build the S3 client now (~200 ms of botocore set-up) instead of on the first
        ``s3://`` URI, where it would hold up a job and every thread waiting for it."""
        self._s3_store()

    def _s3_store(self) -> ObjectStore:
        if self._s3 is None:
            with self._s3_lock:
                if self._s3 is None:
                    self._s3 = self._s3_factory()
        return self._s3

    def head_size(self, uri: str) -> int:
        return self.for_uri(uri).head_size(uri)

    def get_bytes(self, uri: str, *, max_bytes: int) -> bytes:
        return self.for_uri(uri).get_bytes(uri, max_bytes=max_bytes)

    def read_head(self, uri: str, *, max_bytes: int) -> ObjectHead:
        return self.for_uri(uri).read_head(uri, max_bytes=max_bytes)

    def presign_get(self, uri: str, *, ttl_s: int, version_id: str | None) -> str | None:
        return self.for_uri(uri).presign_get(uri, ttl_s=ttl_s, version_id=version_id)

    def put_bytes(self, uri: str, data: bytes, *, content_type: str) -> None:
        self.for_uri(uri).put_bytes(uri, data, content_type=content_type)

    def create_exclusive(self, uri: str, data: bytes, *, content_type: str) -> bool:
        return self.for_uri(uri).create_exclusive(uri, data, content_type=content_type)

    def exists(self, uri: str) -> bool:
        return self.for_uri(uri).exists(uri)

    def exists_each(self, uris: Sequence[str]) -> list[bool]:
        """`exists` of every URI, in order. S3 lookups run concurrently (one round trip
        of waiting instead of one per URI); the first error met is raised."""
        s3_uris = [uri for uri in uris if uri.startswith(S3_SCHEME)]
        if len(s3_uris) < 2:
            return [self.exists(uri) for uri in uris]
        futures = [self._lookups().submit(self.exists, uri) for uri in uris]
        return [future.result() for future in futures]

    def _lookups(self) -> ThreadPoolExecutor:
        # created on first use, in the process that uses it (never across a fork)
        if self._lookup_pool is None:
            with self._s3_lock:
                if self._lookup_pool is None:
                    self._lookup_pool = ThreadPoolExecutor(
                        max_workers=_LOOKUP_THREADS, thread_name_prefix="gvw-s3-lookup"
                    )
        return self._lookup_pool

    def delete(self, uri: str) -> None:
        self.for_uri(uri).delete(uri)

    def list_prefix(self, uri_prefix: str) -> Iterator[str]:
        return self.for_uri(uri_prefix).list_prefix(uri_prefix)

    def list_objects(self, uri_prefix: str) -> Iterator[ObjectInfo]:
        return self.for_uri(uri_prefix).list_objects(uri_prefix)


def get_text(store: ObjectStore, uri: str, *, max_bytes: int) -> str:
    """The object as UTF-8 text; InvalidJob when it is not UTF-8."""
    data = store.get_bytes(uri, max_bytes=max_bytes)
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise InvalidJob(f"{uri} is not UTF-8 text") from exc


def get_json(store: ObjectStore, uri: str, *, max_bytes: int = 64_000_000) -> Any:
    """The object parsed as JSON; InvalidJob when it is not JSON."""
    text = get_text(store, uri, max_bytes=max_bytes)
    try:
        return json.loads(text)
    except ValueError as exc:
        raise InvalidJob(f"{uri} is not valid JSON: {exc}") from exc
