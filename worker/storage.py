"""Where bytes come from and where results go: the `ObjectStore` port and its adapters.

    ObjectStore (Protocol)     head_size, get_bytes, put_bytes, create_exclusive,
    │                          exists, delete, list_prefix
    ├── S3Store                s3://bucket/key, boto3 (endpoint from AWS_ENDPOINT_URL_S3)
    ├── LocalStore             file:///abs/path and file://./relative/path
    └── StoreRouter            picks one of the above by the URI's scheme

URIs carry keys and paths verbatim: no percent-decoding, so ``s3://inbox/a b+c.jpg`` is
the key ``a b+c.jpg``; `worker.uris` is the one parser of them. A prefix (`list_prefix`) is a plain string prefix, as in S3: pass a
trailing ``/`` to list a folder.

Errors are translated at this boundary into the project's exception tree:

    situation                                   raised
    ------------------------------------------  ----------------------------------------
    missing key, bucket or file                 InputNotFound
    403 / permission denied on a read           InputNotFound ("access denied"): S3 answers
                                                403 for a missing key to a caller that may
                                                not list the bucket, so the two look alike
    403 / permission denied on a write          InputNotAllowed: the output cannot be used
    write to a missing bucket                   InvalidJob: the output names no bucket
    object larger than max_bytes                TooLarge (checked before the body is read)
    5xx, SlowDown, throttling, timeouts,        StorageUnavailable (retryable)
    connection errors, expired credentials,
    a skewed clock, full disk
    no credentials, wrong credentials           WorkerMisconfigured: the deployment's
                                                fault, permanent (fix, then replay)
    malformed URI, unknown scheme               InvalidJob, InputNotAllowed

The one write that decides a job's outcome is `create_exclusive` (result.json, error.json):
it creates the object only if it does not exist, so of two attempts racing, one wins.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import random
import stat
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Final, Protocol

from tasks.errors import (
    GvwError,
    InputNotAllowed,
    InputNotFound,
    InvalidJob,
    StorageUnavailable,
    TooLarge,
    WorkerMisconfigured,
)
from worker.uris import FILE_SCHEME, S3_SCHEME, parse_uri
from worker.uris import join_uri as join_uri  # re-exported: the layout's callers use it here

if TYPE_CHECKING:
    from botocore.exceptions import BotoCoreError, ClientError
    from mypy_boto3_s3 import S3Client

# Concurrent existence checks per process (`StoreRouter.exists_each`): a job makes two at
# a time, and a worker process runs a handful of jobs at once.
_LOOKUP_THREADS: Final = 8


@dataclass(frozen=True)
class ObjectInfo:
    uri: str
    size_bytes: int
    etag: str  # S3's ETag; size and mtime for local files


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


# ---------------------------------------------------------------- URIs


def parse_s3_uri(uri: str, *, require_key: bool = True) -> tuple[str, str]:
    """``s3://bucket/key`` -> ``("bucket", "key")``; InvalidJob when malformed.

    With ``require_key=False`` the key may be empty (a bucket or a prefix). The rules are
    `worker.uris`', the project's one URI parser.
    """
    if not uri.startswith(S3_SCHEME):
        raise InvalidJob(f"not an s3:// URI: {uri[:200]!r}")
    parsed = parse_uri(uri, role="object" if require_key else "folder")
    return parsed.bucket, parsed.path


def parse_file_uri(uri: str) -> str:
    """``file:///abs/path`` -> ``/abs/path``; ``file://./rel/path`` -> ``./rel/path``.

    ``..`` segments are refused: an allowed-prefix check done on the URI's text must not be
    escapable by walking up (`worker.uris`).
    """
    if not uri.startswith(FILE_SCHEME):
        raise InvalidJob(f"not a file:// URI: {uri[:200]!r}")
    return parse_uri(uri, role="object").path


# ---------------------------------------------------------------- S3


# Codes as S3 (and S3-compatible stores) spell them; HEAD answers carry only the status.
_S3_NOT_FOUND: Final = frozenset({"NoSuchKey", "NoSuchBucket", "NotFound", "404"})
_S3_DENIED: Final = frozenset(
    {"AccessDenied", "Forbidden", "403", "AllAccessDisabled", "AccountProblem"}
)
# Credentials that are wrong stay wrong: the worker's configuration, refused at once.
_S3_CREDENTIALS: Final = frozenset({"InvalidAccessKeyId", "SignatureDoesNotMatch"})
# Credentials that expired or a clock that drifted: refreshed or resynced, so retried.
_S3_EXPIRING_CREDENTIALS: Final = frozenset(
    {
        "ExpiredToken",
        "ExpiredTokenException",
        "InvalidToken",
        "RequestTimeTooSkewed",
        "TokenRefreshRequired",
    }
)
_S3_TRANSIENT: Final = frozenset(
    {
        "SlowDown",
        "Throttling",
        "ThrottlingException",
        "ThrottledException",
        "RequestThrottled",
        "RequestLimitExceeded",
        "TooManyRequestsException",
        "BandwidthLimitExceeded",
        "RequestTimeout",
        "RequestTimeoutException",
        "PriorRequestNotComplete",
        "InternalError",
        "ServiceUnavailable",
    }
)
# S3 answers 409 when two conditional writes to one key overlap; trying again settles it.
_CONFLICT_RETRIES: Final = 3
_CONFLICT_BACKOFF_S: Final = 0.1


class S3Store:
    """`ObjectStore` over S3 (or MinIO, moto, any S3 API) with one boto3 client.

    The endpoint, region and credentials are boto3's to find (``AWS_ENDPOINT_URL_S3``,
    ``AWS_*``, instance roles); this class only sets timeouts, retries and the pool size.
    botocore's "standard" retry mode already retries throttling, 5xx and connection errors
    ``max_attempts`` times in all, with backoff; what still fails is StorageUnavailable.
    A boto3 client is thread-safe: build one S3Store per process, after any fork.
    """

    def __init__(
        self,
        *,
        connect_timeout_s: float = 5.0,
        read_timeout_s: float = 30.0,
        max_attempts: int = 4,
        max_pool_connections: int = 32,
        list_page_size: int = 1000,
        client: S3Client | None = None,
    ) -> None:
        if client is None:
            import boto3
            from botocore.config import Config

            config = Config(
                connect_timeout=connect_timeout_s,
                read_timeout=read_timeout_s,
                retries={"max_attempts": max_attempts, "mode": "standard"},
                max_pool_connections=max_pool_connections,
                tcp_keepalive=True,
            )
            # a Session of our own: boto3's default session is not safe to share across threads
            client = boto3.session.Session().client("s3", config=config)
        self._client = client
        self._list_page_size = list_page_size

    def head_size(self, uri: str) -> int:
        bucket, key = parse_s3_uri(uri)
        try:
            head = self._client.head_object(Bucket=bucket, Key=key)
        except _boto_errors() as exc:
            raise _translate_s3(exc, uri, writing=False) from exc
        return int(head["ContentLength"])

    def get_bytes(self, uri: str, *, max_bytes: int) -> bytes:
        bucket, key = parse_s3_uri(uri)
        # One GET, its Content-Length checked before the body is read: the same guarantee
        # as a HEAD first, without a second round trip or a window between the two.
        try:
            response = self._client.get_object(Bucket=bucket, Key=key)
        except _boto_errors() as exc:
            raise _translate_s3(exc, uri, writing=False) from exc
        body = response["Body"]
        try:
            size_bytes = int(response["ContentLength"])
            if size_bytes > max_bytes:
                raise _too_large(uri, size_bytes, max_bytes)
            # never more than max_bytes + 1, whatever the header said
            data = body.read(max_bytes + 1)
        except GvwError:
            raise
        except (*_boto_errors(), OSError) as exc:
            raise StorageUnavailable(f"reading {uri} failed: {exc}") from exc
        finally:
            body.close()
        if len(data) > max_bytes:
            raise _too_large(uri, len(data), max_bytes)
        if len(data) != size_bytes:
            raise StorageUnavailable(f"short read of {uri}: {len(data)} of {size_bytes} bytes")
        return data

    def put_bytes(self, uri: str, data: bytes, *, content_type: str) -> None:
        bucket, key = parse_s3_uri(uri)
        try:
            self._client.put_object(Bucket=bucket, Key=key, Body=data, ContentType=content_type)
        except _boto_errors() as exc:
            raise _translate_s3(exc, uri, writing=True) from exc

    def create_exclusive(self, uri: str, data: bytes, *, content_type: str) -> bool:
        from botocore.exceptions import ClientError

        bucket, key = parse_s3_uri(uri)
        for attempt in range(_CONFLICT_RETRIES + 1):
            try:
                self._client.put_object(
                    Bucket=bucket, Key=key, Body=data, ContentType=content_type, IfNoneMatch="*"
                )
                return True
            except ClientError as exc:
                code, status = _s3_error(exc)
                if status == 412 or code == "PreconditionFailed":
                    return self._holds_exactly(bucket, key, data, uri)
                if status == 409 or code == "ConditionalRequestConflict":
                    if attempt < _CONFLICT_RETRIES:
                        time.sleep(_CONFLICT_BACKOFF_S * 2**attempt * random.uniform(0.5, 1.5))
                    continue
                raise _translate_s3(exc, uri, writing=True) from exc
            except _boto_errors() as exc:
                raise _translate_s3(exc, uri, writing=True) from exc
        # still conflicting: whoever we conflicted with may have finished by now
        if self.exists(uri):
            return self._holds_exactly(bucket, key, data, uri)
        raise StorageUnavailable(f"conditional create of {uri} kept conflicting (HTTP 409)")

    def _holds_exactly(self, bucket: str, key: str, data: bytes, uri: str) -> bool:
        """After a 412: was the existing object written by this very call?

        botocore retries a PUT whose answer was lost (a reset connection, a timeout); if
        the first try had landed, the retry meets our own object and gets 412. Calling
        that "someone else won" would make the caller discard artifacts its own committed
        result refers to. Byte-identical content means it is ours (or the same answer).
        """
        try:
            existing = self.get_bytes(uri, max_bytes=len(data))
        except (TooLarge, InputNotFound):
            return False
        return existing == data

    def exists(self, uri: str) -> bool:
        from botocore.exceptions import ClientError

        bucket, key = parse_s3_uri(uri)
        try:
            self._client.head_object(Bucket=bucket, Key=key)
        except ClientError as exc:
            code, _ = _s3_error(exc)
            if code in _S3_NOT_FOUND:
                return False
            raise _translate_s3(exc, uri, writing=False) from exc
        except _boto_errors() as exc:
            raise _translate_s3(exc, uri, writing=False) from exc
        return True

    def delete(self, uri: str) -> None:
        bucket, key = parse_s3_uri(uri)
        try:
            self._client.delete_object(Bucket=bucket, Key=key)
        except _boto_errors() as exc:
            error = _translate_s3(exc, uri, writing=True)
            if not isinstance(error, (InputNotFound, InvalidJob)):
                raise error from exc

    def list_prefix(self, uri_prefix: str) -> Iterator[str]:
        return (info.uri for info in self.list_objects(uri_prefix))

    def list_objects(self, uri_prefix: str) -> Iterator[ObjectInfo]:
        bucket, prefix = parse_s3_uri(uri_prefix, require_key=False)
        paginator = self._client.get_paginator("list_objects_v2")
        pages = paginator.paginate(
            Bucket=bucket, Prefix=prefix, PaginationConfig={"PageSize": self._list_page_size}
        )
        try:
            for page in pages:
                for item in page.get("Contents", []):
                    yield ObjectInfo(
                        uri=f"{S3_SCHEME}{bucket}/{item['Key']}",
                        size_bytes=int(item.get("Size", 0)),
                        etag=str(item.get("ETag", "")).strip('"'),
                    )
        except _boto_errors() as exc:
            raise _translate_s3(exc, uri_prefix, writing=False) from exc


def _boto_errors() -> tuple[type[ClientError], type[BotoCoreError]]:
    # imported on first use: importing worker.storage must not pull botocore in
    from botocore.exceptions import BotoCoreError, ClientError

    return ClientError, BotoCoreError


def _s3_error(exc: ClientError) -> tuple[str, int | None]:
    error = exc.response.get("Error", {})
    status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
    return str(error.get("Code", "")), status


def _translate_s3(exc: Exception, uri: str, *, writing: bool) -> GvwError:
    """A botocore error -> the project's exception tree (the caller adds ``from exc``)."""
    from botocore.exceptions import (
        ClientError,
        NoCredentialsError,
        ParamValidationError,
        PartialCredentialsError,
    )

    if isinstance(exc, ParamValidationError):
        return InvalidJob(f"invalid S3 request for {uri}: {exc}")
    if isinstance(exc, (NoCredentialsError, PartialCredentialsError)):
        # the worker's deployment, not the job, and no retry brings credentials: fix, replay
        return WorkerMisconfigured(
            f"the worker has no usable AWS credentials for {uri} ({exc}): set "
            "AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, or give it an IAM role, then "
            "replay the job (gvw dead-letters replay)"
        )
    if not isinstance(exc, ClientError):
        # timeouts, refused or reset connections, broken response streams
        return StorageUnavailable(f"S3 unreachable for {uri}: {exc}")
    code, status = _s3_error(exc)
    if code in _S3_TRANSIENT or status == 429 or (status is not None and status >= 500):
        return StorageUnavailable(f"S3 unavailable for {uri}: {code or status}", s3_code=code)
    if code in _S3_EXPIRING_CREDENTIALS:
        # temporary credentials are refreshed by botocore: trying again can help
        return StorageUnavailable(
            f"S3 refused the worker's credentials for {uri}: {code}", s3_code=code
        )
    if code in _S3_CREDENTIALS:
        return WorkerMisconfigured(
            f"S3 refused the worker's credentials for {uri} ({code}): check "
            "AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY (or the role) and the endpoint, then "
            "replay the job (gvw dead-letters replay)",
            s3_code=code,
        )
    if code in _S3_NOT_FOUND:
        if writing:
            return InvalidJob(f"cannot write {uri}: the bucket does not exist", s3_code=code)
        return InputNotFound(f"not found: {uri}", s3_code=code)
    if code in _S3_DENIED or status == 403:
        if writing:
            return InputNotAllowed(f"access denied writing {uri}", s3_code=code)
        return InputNotFound(f"not found or access denied: {uri}", s3_code=code)
    # any other 4xx (InvalidObjectState for an archived object, KeyTooLong, ...):
    # repeating the request cannot help
    if writing:
        return InputNotAllowed(f"S3 refused writing {uri}: {code or status}", s3_code=code)
    return InputNotFound(f"S3 refused reading {uri}: {code or status}", s3_code=code)


def _too_large(uri: str, size_bytes: int, max_bytes: int) -> TooLarge:
    return TooLarge(
        f"{uri} is {size_bytes} bytes, above the limit of {max_bytes}",
        size_bytes=size_bytes,
        max_bytes=max_bytes,
    )


# ---------------------------------------------------------------- local files

# mkstemp makes 0600 files; results are for other readers too.
_FILE_MODE: Final = 0o644
_TEMP_SUFFIX: Final = ".gvw-tmp"


class LocalStore:
    """`ObjectStore` over the local filesystem, for ``file://`` URIs.

    Writes never show a half-written file: the bytes go to a hidden temporary file in the
    same directory, are fsynced, then appear under the final name in one step
    (``os.replace`` to overwrite, ``os.link`` to create only if absent). A process killed
    mid-write can leave a ``.<name>.<random>.gvw-tmp`` file behind; `list_prefix` skips them.
    """

    def head_size(self, uri: str) -> int:
        path = parse_file_uri(uri)
        try:
            st = os.stat(path)
        except OSError as exc:
            raise _translate_os(exc, uri, writing=False) from exc
        if not stat.S_ISREG(st.st_mode):
            raise InputNotFound(f"not a regular file: {uri}")
        return st.st_size

    def get_bytes(self, uri: str, *, max_bytes: int) -> bytes:
        path = parse_file_uri(uri)
        # O_NONBLOCK: opening a FIFO for reading would otherwise wait for a writer forever
        flags = os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0)
        try:
            fd = os.open(path, flags)
        except OSError as exc:
            raise _translate_os(exc, uri, writing=False) from exc
        try:
            st = os.fstat(fd)
            if not stat.S_ISREG(st.st_mode):
                raise InputNotFound(f"not a regular file: {uri}")
            if st.st_size > max_bytes:
                raise _too_large(uri, st.st_size, max_bytes)
            with os.fdopen(fd, "rb") as file:
                fd = -1  # the file object owns it now
                data = file.read(max_bytes + 1)  # the file may grow after fstat
        except OSError as exc:
            raise _translate_os(exc, uri, writing=False) from exc
        finally:
            if fd != -1:
                os.close(fd)
        if len(data) > max_bytes:
            raise _too_large(uri, len(data), max_bytes)
        return data

    def put_bytes(self, uri: str, data: bytes, *, content_type: str) -> None:
        path = parse_file_uri(uri)
        try:
            temp_path = _write_temp_beside(path, data)
            try:
                os.replace(temp_path, path)
            except BaseException:
                _unlink_quietly(temp_path)
                raise
            _fsync_dir(os.path.dirname(path))
        except OSError as exc:
            raise _translate_os(exc, uri, writing=True) from exc

    def create_exclusive(self, uri: str, data: bytes, *, content_type: str) -> bool:
        path = parse_file_uri(uri)
        try:
            if os.path.lexists(path):
                return False  # the common case of a redelivered job: no temp file at all
            temp_path = _write_temp_beside(path, data)
            try:
                # link(2) fails if the name exists, and the name appears with the whole
                # content at once; open(..., "xb") would expose a half-written file.
                os.link(temp_path, path)
            except FileExistsError:
                return False
            except OSError as exc:
                if exc.errno not in (errno.EPERM, errno.ENOTSUP, errno.EOPNOTSUPP, errno.EMLINK):
                    raise
                return _create_exclusive_without_links(path, data)
            finally:
                _unlink_quietly(temp_path)
            _fsync_dir(os.path.dirname(path))
            return True
        except OSError as exc:
            raise _translate_os(exc, uri, writing=True) from exc

    def exists(self, uri: str) -> bool:
        path = parse_file_uri(uri)
        try:
            os.stat(path)
        except (FileNotFoundError, NotADirectoryError):
            return False
        except OSError as exc:
            raise _translate_os(exc, uri, writing=False) from exc
        return True

    def delete(self, uri: str) -> None:
        path = parse_file_uri(uri)
        try:
            os.unlink(path)
        except (FileNotFoundError, NotADirectoryError):
            pass
        except OSError as exc:
            raise _translate_os(exc, uri, writing=True) from exc

    def list_objects(self, uri_prefix: str) -> Iterator[ObjectInfo]:
        for uri in self.list_prefix(uri_prefix):
            try:
                info = os.stat(parse_file_uri(uri))
            except OSError:
                continue  # removed while listing
            # no ETag on a file system: size and modification time identify a version
            yield ObjectInfo(uri, info.st_size, f"{info.st_size}-{info.st_mtime_ns}")

    def list_prefix(self, uri_prefix: str) -> Iterator[str]:
        prefix_path = parse_file_uri(uri_prefix)
        # the deepest directory that every match lives under
        if prefix_path.endswith("/"):
            root = prefix_path.rstrip("/") or "/"
        else:
            root = os.path.dirname(prefix_path) or "."
        if not os.path.isdir(root):
            return
        found: list[str] = []

        def on_walk_error(exc: OSError) -> None:
            if not isinstance(exc, FileNotFoundError):  # a folder deleted while we walk is fine
                raise exc

        try:
            for dir_path, dir_names, file_names in os.walk(root, onerror=on_walk_error):
                # descend only where a match can be: not into every other job's folder
                dir_names[:] = [
                    name
                    for name in dir_names
                    if _may_hold_prefix(os.path.join(dir_path, name), prefix_path)
                ]
                for name in file_names:
                    if name.startswith(".") and name.endswith(_TEMP_SUFFIX):
                        continue  # an unfinished write, not an object
                    path = os.path.join(dir_path, name)
                    if path.startswith(prefix_path):
                        found.append(path)
        except OSError as exc:
            raise _translate_os(exc, uri_prefix, writing=False) from exc
        # answer in the URI's own spelling (relative stays relative)
        for path in sorted(found):
            yield uri_prefix + path[len(prefix_path) :]


def _may_hold_prefix(dir_path: str, prefix_path: str) -> bool:
    as_folder = dir_path + "/"
    return as_folder.startswith(prefix_path) or prefix_path.startswith(as_folder)


def _write_temp_beside(path: str, data: bytes) -> str:
    directory = os.path.dirname(path) or "."
    os.makedirs(directory, exist_ok=True)
    fd, temp_path = tempfile.mkstemp(
        prefix=f".{os.path.basename(path)}.", suffix=_TEMP_SUFFIX, dir=directory
    )
    try:
        with os.fdopen(fd, "wb") as file:
            file.write(data)
            file.flush()
            os.fchmod(file.fileno(), _FILE_MODE)
            os.fsync(file.fileno())  # the content is on disk before its name is
    except BaseException:
        _unlink_quietly(temp_path)
        raise
    return temp_path


def _create_exclusive_without_links(path: str, data: bytes) -> bool:
    # Filesystems without hard links (some FUSE and SMB mounts): still exclusive, but a
    # reader may briefly see a short file. Readers of result.json parse it, and retry.
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, _FILE_MODE)
    except FileExistsError:
        return False
    with os.fdopen(fd, "wb") as file:
        file.write(data)
        file.flush()
        os.fsync(file.fileno())
    return True


def _fsync_dir(directory: str) -> None:
    # the new name survives a power cut only once its directory is on disk
    try:
        fd = os.open(directory or ".", os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass  # some filesystems cannot fsync a directory; the data itself is synced
    finally:
        os.close(fd)


def _unlink_quietly(path: str) -> None:
    with contextlib.suppress(FileNotFoundError):
        os.unlink(path)


def _translate_os(exc: OSError, uri: str, *, writing: bool) -> GvwError:
    if writing and isinstance(exc, FileExistsError):
        # makedirs met a file where a folder of the output should be
        return InputNotAllowed(f"cannot write {uri}: a file is in the way ({exc.filename})")
    if isinstance(exc, (FileNotFoundError, NotADirectoryError, IsADirectoryError)):
        if writing:
            return InputNotAllowed(f"cannot write {uri}: {exc.strerror}")
        return InputNotFound(f"not found: {uri}")
    if isinstance(exc, PermissionError) or exc.errno == errno.EROFS:
        if writing:
            return InputNotAllowed(f"access denied writing {uri}: {exc.strerror}")
        return InputNotFound(f"not found or access denied: {uri}")
    # ENOSPC, EIO, a stale NFS handle, ...: the disk, not the job
    return StorageUnavailable(f"local storage failed for {uri}: {exc}")


# ---------------------------------------------------------------- routing


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
        store = self.for_uri(uri_prefix)
        return store.list_objects(uri_prefix)  # type: ignore[attr-defined, no-any-return]


# ---------------------------------------------------------------- helpers


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
