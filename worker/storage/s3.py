"""`S3Store`: the `ObjectStore` port over S3 (or MinIO, moto, any S3 API) with boto3.

Keys are taken verbatim from the URI (`worker.storage.uris`); botocore errors leave this
module translated into `tasks.errors` (see the package's table).
"""

from __future__ import annotations

import random
import time
from collections.abc import Iterator
from typing import TYPE_CHECKING, Final

from tasks.errors import (
    GvwError,
    InputNotAllowed,
    InputNotFound,
    InvalidJob,
    StorageUnavailable,
    TooLarge,
    WorkerMisconfigured,
)
from worker.storage.port import ObjectHead, ObjectInfo, too_large
from worker.storage.uris import S3_SCHEME, parse_s3_uri

if TYPE_CHECKING:
    from botocore.exceptions import BotoCoreError, ClientError
    from mypy_boto3_s3 import S3Client


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
                # pre-signed URLs in SigV4 (botocore's default for them is the legacy
                # SigV2 in us-east-1, which newer regions refuse)
                signature_version="s3v4",
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
                raise too_large(uri, size_bytes, max_bytes)
            # never more than max_bytes + 1, whatever the header said
            data = body.read(max_bytes + 1)
        except GvwError:
            raise
        except (*_boto_errors(), OSError) as exc:
            raise StorageUnavailable(f"reading {uri} failed: {exc}") from exc
        finally:
            body.close()
        if len(data) > max_bytes:
            raise too_large(uri, len(data), max_bytes)
        if len(data) != size_bytes:
            raise StorageUnavailable(f"short read of {uri}: {len(data)} of {size_bytes} bytes")
        return data

    def read_head(self, uri: str, *, max_bytes: int) -> ObjectHead:
        """One ranged GET: the first bytes, and from its headers the whole object's size
        (Content-Range), ETag and version. S3 returns no full-object checksum on a ranged
        read: a HEAD asks for it (ChecksumMode) when the first bytes are not the whole
        object, which hashes itself."""
        bucket, key = parse_s3_uri(uri)
        try:
            response = self._client.get_object(
                Bucket=bucket, Key=key, Range=f"bytes=0-{max(0, max_bytes - 1)}"
            )
            body = response["Body"]
            try:
                data = body.read(max_bytes)
            finally:
                body.close()
        except _boto_errors() as exc:
            raise _translate_s3(exc, uri, writing=False) from exc
        except OSError as exc:
            raise StorageUnavailable(f"reading {uri} failed: {exc}") from exc
        content_range = str(response.get("ContentRange") or "")
        total = content_range.rpartition("/")[2]
        size_bytes = int(total) if total.isdigit() else int(response["ContentLength"])
        checksum = None
        if len(data) < size_bytes:
            try:
                head = self._client.head_object(Bucket=bucket, Key=key, ChecksumMode="ENABLED")
            except _boto_errors() as exc:
                raise _translate_s3(exc, uri, writing=False) from exc
            checksum = head.get("ChecksumSHA256")
        return ObjectHead(
            data=data,
            size_bytes=size_bytes,
            etag=str(response.get("ETag") or ""),
            version_id=response.get("VersionId"),
            checksum_sha256=checksum,
        )

    def presign_get(self, uri: str, *, ttl_s: int, version_id: str | None) -> str | None:
        bucket, key = parse_s3_uri(uri)
        params = {"Bucket": bucket, "Key": key}
        if version_id:
            params["VersionId"] = version_id  # Gemini reads exactly what was described
        # signed locally from the credentials: no request to S3
        return str(
            self._client.generate_presigned_url("get_object", Params=params, ExpiresIn=ttl_s)
        )

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
