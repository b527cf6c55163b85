"""S3 object notifications, in every shape they arrive in, decoded into `ObjectEvent`s.

Shapes met in practice (docs/bridge.md shows one sample of each):

- **S3 event records** `{"Records": [{"eventName": "ObjectCreated:Put", "s3": {...}}]}`: S3 to
  SQS, SNS or Lambda, moto (sparse: no versionId, no sequencer), and the records MinIO
  sends (its eventName keeps the `s3:` prefix). Keys are URL-encoded form-style: `+` is a
  space, `%2B` a plus, `%2F` a slash (MinIO and moto encode it, AWS does not).
- **SNS envelope** `{"Type": "Notification", "Message": "<a notification as a JSON string>"}`:
  S3 -> SNS -> SQS without raw message delivery.
- **Lambda batches** from SQS (`Records[].body`) and SNS (`Records[].Sns.Message`).
- **EventBridge** `{"source": "aws.s3", "detail-type": "Object Created", "detail": {...}}`: here
  the key is plain text, the ETag is `etag` and the version `version-id`.
- **MinIO webhook** `{"EventName": "s3:ObjectCreated:Put", "Key": "bucket/a%2Fb.jpg",
  "Records": [...]}`: the records are the truth; `Key` is only a summary.
- **`s3:TestEvent`**, which S3 sends when a notification is configured: ignored.

Only object creations become events. Deletions, restores, tagging, folder markers and the
test event are returned as `ignored` reasons, so a caller can log and count them; a body
in no known shape raises `UndecodableNotification`. Everything here is pure.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any
from urllib.parse import unquote_plus

CREATED_PREFIX = "ObjectCreated:"
# MinIO reports tag, retention and legal-hold changes as "object created": the bytes did
# not change, so there is nothing new to look at.
METADATA_ONLY_CREATIONS = frozenset({"PutTagging", "DeleteTagging", "PutRetention", "PutLegalHold"})
# EventBridge names the API call ("reason"); S3 records name the event. Same vocabulary
# for both, so logs and tests read alike whichever way an event came.
_EVENTBRIDGE_REASONS = {
    "PutObject": "Put",
    "POST Object": "Post",
    "CopyObject": "Copy",
    "CompleteMultipartUpload": "CompleteMultipartUpload",
}
# An SNS envelope inside a Lambda SQS record is as deep as real deliveries nest.
_MAX_NESTING = 4


class UndecodableNotification(ValueError):
    """The body is not a notification in any shape this module knows."""


@dataclass(frozen=True)
class ObjectEvent:
    """One object created in a bucket. `key` is decoded (the object's real name)."""

    bucket: str
    key: str
    size_bytes: int | None = None
    etag: str | None = None  # without the quotes S3 puts around it in headers
    version_id: str | None = None
    event_name: str = "ObjectCreated:Put"  # S3 records' vocabulary, no "s3:" prefix
    event_time: str | None = None  # ISO 8601, as the source gave it

    @property
    def uri(self) -> str:
        # The key is not escaped: the worker splits s3:// URIs by hand, so spaces, "+",
        # "?" and "#" in a key survive (worker.contract.jobs.normalize_uri).
        return f"s3://{self.bucket}/{self.key}"

    def identity(self) -> tuple[str, str]:
        """What tells this content apart from other content once stored under the same key:
        the version id where the bucket is versioned, else the ETag (the same bytes give the
        same ETag), else the event time."""
        if self.version_id:
            return "version", self.version_id
        if self.etag:
            return "etag", self.etag
        if self.event_time:
            return "time", self.event_time
        return "none", ""


@dataclass(frozen=True)
class Decoded:
    """What one notification holds: object creations, and why anything else was left out."""

    shape: str  # "s3", "sns>s3", "eventbridge", "minio", "s3-test-event", ...
    events: tuple[ObjectEvent, ...] = ()
    ignored: tuple[str, ...] = ()


def decode_notification(body: str | bytes | Mapping[str, Any]) -> Decoded:
    """Decode an SQS message body, a webhook POST body or a Lambda event."""
    return _decode(_as_object(body, what="notification"), depth=0)


# --- shapes -----------------------------------------------------------------------------------


def _decode(doc: Mapping[str, Any], *, depth: int) -> Decoded:
    if depth > _MAX_NESTING:
        raise UndecodableNotification("notification nested deeper than any real delivery")
    if doc.get("Event") == "s3:TestEvent":
        return Decoded("s3-test-event", ignored=(f"s3:TestEvent for bucket {doc.get('Bucket')}",))
    if "Type" in doc and "TopicArn" in doc:
        return _decode_sns_envelope(doc, depth=depth)
    if doc.get("source") == "aws.s3" and "detail-type" in doc:
        return _decode_eventbridge(doc)
    if "Records" in doc:
        shape = "minio" if "EventName" in doc else "s3"
        return _decode_records(doc["Records"], shape=shape, depth=depth)
    raise UndecodableNotification(
        f"not an S3 notification (top-level fields: {', '.join(sorted(doc)[:8]) or 'none'})"
    )


def _decode_sns_envelope(doc: Mapping[str, Any], *, depth: int) -> Decoded:
    kind = doc.get("Type")
    if kind != "Notification":
        # A SubscriptionConfirmation must be confirmed by a person or by IaC, not by a
        # bridge that would then trust whatever topic wrote to its queue.
        return Decoded("sns", ignored=(f"SNS {kind} from {doc.get('TopicArn')}",))
    inner = _decode(_as_object(doc.get("Message"), what="SNS Message"), depth=depth + 1)
    return Decoded(f"sns>{inner.shape}", inner.events, inner.ignored)


def _decode_records(records: Any, *, shape: str, depth: int) -> Decoded:
    if not isinstance(records, list):
        raise UndecodableNotification("Records is not a list")
    events: list[ObjectEvent] = []
    ignored: list[str] = []
    inner_shapes: list[str] = []
    for index, record in enumerate(records):
        if not isinstance(record, Mapping):
            raise UndecodableNotification(f"Records[{index}] is not an object")
        nested = _nested_body(record)
        if nested is not None:
            source, body = nested
            inner = _decode(_as_object(body, what=f"Records[{index}] body"), depth=depth + 1)
            inner_shapes.append(f"lambda-{source}>{inner.shape}")
            events.extend(inner.events)
            ignored.extend(inner.ignored)
            continue
        if not isinstance(record.get("s3"), Mapping):
            raise UndecodableNotification(f"Records[{index}] has no s3 object")
        event, reason = _decode_s3_record(record, index=index)
        if event is not None:
            events.append(event)
        if reason is not None:
            ignored.append(reason)
    if inner_shapes:
        shape = inner_shapes[0]
    return Decoded(shape, tuple(events), tuple(ignored))


def _nested_body(record: Mapping[str, Any]) -> tuple[str, Any] | None:
    """("sqs" | "sns", the notification inside) for a Lambda SQS or SNS record."""
    if record.get("eventSource") == "aws:sqs" and "body" in record:
        return "sqs", record["body"]
    sns = record.get("Sns")
    if record.get("EventSource") == "aws:sns" and isinstance(sns, Mapping):
        return "sns", sns.get("Message")
    return None


def _decode_s3_record(
    record: Mapping[str, Any], *, index: int
) -> tuple[ObjectEvent | None, str | None]:
    where = f"Records[{index}]"
    s3 = record["s3"]
    bucket = _text(_field(s3, "bucket", where=f"{where}.s3"), "name", where=f"{where}.s3.bucket")
    obj = _field(s3, "object", where=f"{where}.s3")
    key = _unquote_key(_text(obj, "key", where=f"{where}.s3.object"), where=where)
    event_name = _text(record, "eventName", where=where).removeprefix("s3:")
    event = ObjectEvent(
        bucket=bucket,
        key=key,
        size_bytes=_size(obj.get("size"), where=where),
        etag=_etag(obj.get("eTag")),
        version_id=_version(obj.get("versionId")),
        event_name=event_name,
        event_time=_time(record.get("eventTime")),
    )
    return _keep_creations(event)


def _decode_eventbridge(doc: Mapping[str, Any]) -> Decoded:
    detail = _field(doc, "detail", where="EventBridge event")
    bucket = _text(_field(detail, "bucket", where="detail"), "name", where="detail.bucket")
    obj = _field(detail, "object", where="detail")
    key = _text(obj, "key", where="detail.object")  # plain text here, never URL-encoded
    detail_type = doc["detail-type"]
    if detail_type != "Object Created":
        return Decoded("eventbridge", ignored=(f"{detail_type}: s3://{bucket}/{key}",))
    reason = str(detail.get("reason") or "Put")
    event = ObjectEvent(
        bucket=bucket,
        key=key,
        size_bytes=_size(obj.get("size"), where="detail.object"),
        # AWS writes "etag"; moto writes "eTag" as in S3 records
        etag=_etag(obj.get("etag", obj.get("eTag"))),
        version_id=_version(obj.get("version-id")),
        event_name=CREATED_PREFIX + _EVENTBRIDGE_REASONS.get(reason, reason),
        event_time=_time(doc.get("time")),
    )
    kept, ignored = _keep_creations(event)
    return Decoded("eventbridge", (kept,) if kept else (), (ignored,) if ignored else ())


def _keep_creations(event: ObjectEvent) -> tuple[ObjectEvent | None, str | None]:
    what = f"{event.event_name}: {event.uri}"
    if not event.event_name.startswith(CREATED_PREFIX):
        return None, what
    if event.event_name.removeprefix(CREATED_PREFIX) in METADATA_ONLY_CREATIONS:
        return None, f"{what} (metadata only)"
    if event.key.endswith("/"):
        return None, f"{what} (folder marker)"
    return event, None


# --- fields -----------------------------------------------------------------------------------


def _as_object(body: Any, *, what: str) -> Mapping[str, Any]:
    if isinstance(body, bytes | bytearray):
        try:
            body = bytes(body).decode("utf-8")
        except UnicodeDecodeError as exc:
            raise UndecodableNotification(f"{what} is not UTF-8") from exc
    if isinstance(body, str):
        try:
            body = json.loads(body)
        except json.JSONDecodeError as exc:
            raise UndecodableNotification(f"{what} is not JSON: {exc}") from exc
    if not isinstance(body, Mapping):
        raise UndecodableNotification(f"{what} is not a JSON object")
    return body


def _field(doc: Mapping[str, Any], name: str, *, where: str) -> Mapping[str, Any]:
    value = doc.get(name)
    if not isinstance(value, Mapping):
        raise UndecodableNotification(f"{where}.{name} is missing or not an object")
    return value


def _text(doc: Mapping[str, Any], name: str, *, where: str) -> str:
    value = doc.get(name)
    if not isinstance(value, str) or not value:
        raise UndecodableNotification(f"{where}.{name} is missing or not a string")
    return value


def _unquote_key(raw: str, *, where: str) -> str:
    # errors="strict": a key that does not decode to UTF-8 is a broken notification, not a
    # name with U+FFFD in it that would then be "not found".
    try:
        return unquote_plus(raw, encoding="utf-8", errors="strict")
    except UnicodeDecodeError as exc:
        raise UndecodableNotification(f"{where}: key {raw!r} is not UTF-8 once decoded") from exc


def _size(value: Any, *, where: str) -> int | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise UndecodableNotification(f"{where}: size {value!r} is not a byte count")
    return value


def _etag(value: Any) -> str | None:
    if not isinstance(value, str) or not value.strip('"'):
        return None
    return value.strip('"')


def _version(value: Any) -> str | None:
    # "null" is the version id of every object written while versioning is suspended: it
    # repeats for new content, so it identifies nothing (the ETag does then).
    if not isinstance(value, str) or value in ("", "null"):
        return None
    return value


def _time(value: Any) -> str | None:
    if isinstance(value, str) and value:
        return value
    # moto's EventBridge events carry epoch seconds
    if isinstance(value, int | float) and not isinstance(value, bool):
        stamp = datetime.fromtimestamp(float(value), tz=UTC)
        return stamp.isoformat(timespec="milliseconds").replace("+00:00", "Z")
    return None
