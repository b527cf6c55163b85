"""S3 notifications in every shape met in practice, decoded into object events.

One realistic sample per shape, written after AWS's and MinIO's documented formats (and
what moto's server actually sends), with the keys that break naive decoders: spaces
(`+` in S3 records), literal plus signs (`%2B`), percent signs, UTF-8, nested prefixes.
"""

from __future__ import annotations

import json
from typing import Any

import pytest

from worker.bridge.notifications import (
    ObjectEvent,
    UndecodableNotification,
    decode_notification,
)


def s3_record(
    key: str,
    *,
    bucket: str = "amzn-s3-demo-bucket",
    event_name: str = "ObjectCreated:Put",
    size: int | None = 1024,
    etag: str | None = "d41d8cd98f00b204e9800998ecf8427e",
    version_id: str | None = None,
) -> dict[str, Any]:
    """An S3 event record as S3 sends it to SQS, SNS and Lambda (event version 2.1)."""
    obj: dict[str, Any] = {"key": key, "sequencer": "0055AED6DCD90281E5"}
    if size is not None:
        obj["size"] = size
    if etag is not None:
        obj["eTag"] = etag
    if version_id is not None:
        obj["versionId"] = version_id
    return {
        "eventVersion": "2.1",
        "eventSource": "aws:s3",
        "awsRegion": "us-west-2",
        "eventTime": "2024-05-06T07:08:09.123Z",
        "eventName": event_name,
        "userIdentity": {"principalId": "AWS:AIDAJDPLRKLG7UEXAMPLE"},
        "requestParameters": {"sourceIPAddress": "203.0.113.7"},
        "responseElements": {
            "x-amz-request-id": "C3D13FE58DE4C810",
            "x-amz-id-2": "FMyUVURIY8/IgAtTv8xRjskZQpcIZ9KG4V5Wp6S7S/JRWeUWerMUE5JgHvANOjpD",
        },
        "s3": {
            "s3SchemaVersion": "1.0",
            "configurationId": "images-to-vision",
            "bucket": {
                "name": bucket,
                "ownerIdentity": {"principalId": "A3NL1KOZZKExample"},
                "arn": f"arn:aws:s3:::{bucket}",
            },
            "object": obj,
        },
    }


def sns_envelope(message: dict[str, Any]) -> dict[str, Any]:
    """S3 -> SNS -> SQS without raw message delivery: the S3 event is a JSON string."""
    return {
        "Type": "Notification",
        "MessageId": "0c2d2b46-8a43-5a0a-9f3e-3c0f6e6b2f1a",
        "TopicArn": "arn:aws:sns:us-west-2:123456789012:uploads",
        "Subject": "Amazon S3 Notification",
        "Message": json.dumps(message),
        "Timestamp": "2024-05-06T07:08:09.456Z",
        "SignatureVersion": "1",
        "Signature": "EXAMPLEpH+DcEwjAPg8O9mY8dReBSwksfg2S7WKQcikcNKWLQjwu6A4VbeS0QHVCkhRS7fUQvi2egU3N858fiTDN6bkkOxYDVrY0Ad8L10Hs3zH81mtnPk5uvvolIC1CXGu43obcgFxeL3khZl8IKvO61GWB6jI9b5+gLPoBc1Q=",
        "SigningCertURL": "https://sns.us-west-2.amazonaws.com/SimpleNotificationService-example.pem",
        "UnsubscribeURL": "https://sns.us-west-2.amazonaws.com/?Action=Unsubscribe&SubscriptionArn=arn:aws:sns:us-west-2:123456789012:uploads:1a2b",
    }


def eventbridge(
    key: str, *, detail_type: str = "Object Created", reason: str = "PutObject"
) -> dict[str, Any]:
    """EventBridge's S3 event: the key is plain text, `etag` and `version-id` spelled so."""
    obj: dict[str, Any] = {
        "key": key,
        "size": 5_242_880,
        "etag": "b1946ac92492d2347c6235b4d2611184",
        "version-id": "IYV3p45BT0ac8hjHg1houSdS1a.Mro8e",
        "sequencer": "617f08299329d189",
    }
    return {
        "version": "0",
        "id": "17793124-05d4-b198-2fde-7ededc63b103",
        "detail-type": detail_type,
        "source": "aws.s3",
        "account": "111122223333",
        "time": "2021-11-12T00:00:00Z",
        "region": "ca-central-1",
        "resources": ["arn:aws:s3:::amzn-s3-demo-bucket1"],
        "detail": {
            "version": "0",
            "bucket": {"name": "amzn-s3-demo-bucket1"},
            "object": obj,
            "request-id": "N4N7GDK58NMKJ12R",
            "requester": "123456789012",
            "source-ip-address": "1.2.3.4",
            "reason": reason,
        },
    }


def minio_webhook(
    encoded_key: str, *, bucket: str = "images", event_name: str = "s3:ObjectCreated:Put"
) -> dict[str, Any]:
    """What MinIO POSTs to a webhook target: `Key` summarises, `Records` hold the event."""
    return {
        "EventName": event_name,
        "Key": f"{bucket}/{encoded_key}",
        "Records": [
            {
                "eventVersion": "2.0",
                "eventSource": "minio:s3",
                "awsRegion": "",
                "eventTime": "2024-05-06T07:08:09.123Z",
                "eventName": event_name,
                "userIdentity": {"principalId": "minioadmin"},
                "requestParameters": {
                    "principalId": "minioadmin",
                    "region": "",
                    "sourceIPAddress": "172.17.0.1",
                },
                "responseElements": {
                    "x-amz-id-2": "dd9025bab4ad464b049177c95eb6ebf374d3b3fd1af9251148b658df7ac2e3e8",
                    "x-amz-request-id": "17CCB1A2B3C4D5E6",
                    "x-minio-deployment-id": "8e4a1f5e-5f6a-4b7c-9d0e-1f2a3b4c5d6e",
                    "x-minio-origin-endpoint": "http://172.17.0.2:9000",
                },
                "s3": {
                    "s3SchemaVersion": "1.0",
                    "configurationId": "Config",
                    "bucket": {
                        "name": bucket,
                        "ownerIdentity": {"principalId": "minioadmin"},
                        "arn": f"arn:aws:s3:::{bucket}",
                    },
                    "object": {
                        "key": encoded_key,
                        "size": 48213,
                        "eTag": "2b6f0cc904d137be2e1730235f5664094b831186",
                        "contentType": "image/jpeg",
                        "userMetadata": {"content-type": "image/jpeg"},
                        "sequencer": "17CCB1A2B3F0A1B2",
                    },
                },
                "source": {
                    "host": "172.17.0.1",
                    "port": "",
                    "userAgent": "MinIO (linux; amd64) minio-go/v7.0.70",
                },
            }
        ],
    }


# what moto's server put on an SQS queue for `p/c++/x+y.png` (copied from a real run)
MOTO_RECORD = {
    "Records": [
        {
            "eventVersion": "2.1",
            "eventSource": "aws:s3",
            "awsRegion": "us-east-1",
            "eventTime": "2026-11-25T01:24:46.600Z",
            "eventName": "ObjectCreated:Put",
            "s3": {
                "s3SchemaVersion": "1.0",
                "configurationId": "rTDNDlZvJF55QZPN62wtGPx1TSb5IfXW4PThEgiL4sSUpnOOlO",
                "bucket": {"name": "inbox", "arn": "arn:aws:s3:::inbox"},
                "object": {
                    "key": "p%2Fc%2B%2B%2Fx%2By.png",
                    "size": 1,
                    "eTag": "9dd4e461268c8034f5c8564e155c67a6",
                },
            },
        }
    ]
}

TEST_EVENT = {
    "Service": "Amazon S3",
    "Event": "s3:TestEvent",
    "Time": "2024-05-06T07:08:09.000Z",
    "Bucket": "amzn-s3-demo-bucket",
    "RequestId": "5582815E1AEA5ADF",
    "HostId": "8cLeGAmw098X5cv4Zkwcmo8vvZa3eH3eKxsPzbB9wrR+YstdA6Knx4Ip8EXAMPLE",
}

AWS_ETAG = "d41d8cd98f00b204e9800998ecf8427e"


@pytest.mark.parametrize(
    ("body", "shape", "expected"),
    [
        pytest.param(
            {
                "Records": [
                    s3_record(
                        "photos/2024/Happy+Face+%2B1.jpg",
                        version_id="096fKKXTRTtl3on89fVO.nfljtsv6qko",
                    )
                ]
            },
            "s3",
            ObjectEvent(
                bucket="amzn-s3-demo-bucket",
                key="photos/2024/Happy Face +1.jpg",
                size_bytes=1024,
                etag=AWS_ETAG,
                version_id="096fKKXTRTtl3on89fVO.nfljtsv6qko",
                event_name="ObjectCreated:Put",
                event_time="2024-05-06T07:08:09.123Z",
            ),
            id="s3-to-sqs-space-as-plus-and-encoded-plus",
        ),
        pytest.param(
            sns_envelope({"Records": [s3_record("r%C3%A9sum%C3%A9s/caf%C3%A9+au+lait.png")]}),
            "sns>s3",
            ObjectEvent(
                bucket="amzn-s3-demo-bucket",
                key="résumés/café au lait.png",
                size_bytes=1024,
                etag=AWS_ETAG,
                event_time="2024-05-06T07:08:09.123Z",
            ),
            id="sns-envelope-utf8-key",
        ),
        pytest.param(
            eventbridge("incoming/a b+c/über 100%.jpg"),
            "eventbridge",
            ObjectEvent(
                bucket="amzn-s3-demo-bucket1",
                key="incoming/a b+c/über 100%.jpg",
                size_bytes=5_242_880,
                etag="b1946ac92492d2347c6235b4d2611184",
                version_id="IYV3p45BT0ac8hjHg1houSdS1a.Mro8e",
                event_name="ObjectCreated:Put",
                event_time="2021-11-12T00:00:00Z",
            ),
            id="eventbridge-key-is-not-url-encoded",
        ),
        pytest.param(
            eventbridge("big/scan.tif", reason="CompleteMultipartUpload"),
            "eventbridge",
            ObjectEvent(
                bucket="amzn-s3-demo-bucket1",
                key="big/scan.tif",
                size_bytes=5_242_880,
                etag="b1946ac92492d2347c6235b4d2611184",
                version_id="IYV3p45BT0ac8hjHg1houSdS1a.Mro8e",
                event_name="ObjectCreated:CompleteMultipartUpload",
                event_time="2021-11-12T00:00:00Z",
            ),
            id="eventbridge-multipart",
        ),
        pytest.param(
            minio_webhook("nested%2Fdeep%2Fcat+photo%2B1.jpg"),
            "minio",
            ObjectEvent(
                bucket="images",
                key="nested/deep/cat photo+1.jpg",
                size_bytes=48213,
                etag="2b6f0cc904d137be2e1730235f5664094b831186",
                event_name="ObjectCreated:Put",
                event_time="2024-05-06T07:08:09.123Z",
            ),
            id="minio-webhook-slash-encoded",
        ),
        pytest.param(
            MOTO_RECORD,
            "s3",
            ObjectEvent(
                bucket="inbox",
                key="p/c++/x+y.png",
                size_bytes=1,
                etag="9dd4e461268c8034f5c8564e155c67a6",
                event_time="2026-11-25T01:24:46.600Z",
            ),
            id="moto-sparse-record",
        ),
        pytest.param(
            json.dumps({"Records": [s3_record("100%25+done/%E6%97%A5%E6%9C%AC.webp")]}),
            "s3",
            ObjectEvent(
                bucket="amzn-s3-demo-bucket",
                key="100% done/日本.webp",
                size_bytes=1024,
                etag=AWS_ETAG,
                event_time="2024-05-06T07:08:09.123Z",
            ),
            id="json-text-percent-and-cjk",
        ),
        pytest.param(
            {"Records": [s3_record("a.jpg", etag='"' + AWS_ETAG + '"', version_id="null")]},
            "s3",
            ObjectEvent(
                bucket="amzn-s3-demo-bucket",
                key="a.jpg",
                size_bytes=1024,
                etag=AWS_ETAG,
                version_id=None,
                event_time="2024-05-06T07:08:09.123Z",
            ),
            id="quoted-etag-and-suspended-versioning-null",
        ),
        pytest.param(
            {
                "Records": [
                    {
                        "messageId": "059f36b4-87a3-44ab-83d2-661975830a7d",
                        "receiptHandle": "AQEBwJnKyrHigUMZj6rYigCgxlaS3SLy0a...",
                        "body": json.dumps({"Records": [s3_record("in/x+y.png")]}),
                        "attributes": {"ApproximateReceiveCount": "1"},
                        "messageAttributes": {},
                        "md5OfBody": "e4e68fb7bd0e697a0ae8f1bb342846b3",
                        "eventSource": "aws:sqs",
                        "eventSourceARN": "arn:aws:sqs:us-west-2:123456789012:uploads",
                        "awsRegion": "us-west-2",
                    }
                ]
            },
            "lambda-sqs>s3",
            ObjectEvent(
                bucket="amzn-s3-demo-bucket",
                key="in/x y.png",
                size_bytes=1024,
                etag=AWS_ETAG,
                event_time="2024-05-06T07:08:09.123Z",
            ),
            id="lambda-sqs-batch",
        ),
        pytest.param(
            {
                "Records": [
                    {
                        "EventSource": "aws:sns",
                        "EventVersion": "1.0",
                        "EventSubscriptionArn": "arn:aws:sns:us-west-2:123456789012:uploads:1a2b",
                        "Sns": {
                            "Type": "Notification",
                            "TopicArn": "arn:aws:sns:us-west-2:123456789012:uploads",
                            "Message": json.dumps({"Records": [s3_record("in/z.png")]}),
                        },
                    }
                ]
            },
            "lambda-sns>s3",
            ObjectEvent(
                bucket="amzn-s3-demo-bucket",
                key="in/z.png",
                size_bytes=1024,
                etag=AWS_ETAG,
                event_time="2024-05-06T07:08:09.123Z",
            ),
            id="lambda-sns-record",
        ),
    ],
)
def test_object_creations_decode_to_one_event(body: Any, shape: str, expected: ObjectEvent) -> None:
    decoded = decode_notification(body)
    assert decoded.shape == shape
    assert decoded.events == (expected,)
    assert decoded.ignored == ()


@pytest.mark.parametrize(
    ("body", "reason_fragment"),
    [
        pytest.param(TEST_EVENT, "s3:TestEvent", id="s3-test-event"),
        pytest.param(sns_envelope(TEST_EVENT), "s3:TestEvent", id="s3-test-event-through-sns"),
        pytest.param(
            {"Records": [s3_record("a.jpg", event_name="ObjectRemoved:Delete", etag=None)]},
            "ObjectRemoved:Delete",
            id="deletion",
        ),
        pytest.param(
            {"Records": [s3_record("a.jpg", event_name="ObjectRemoved:DeleteMarkerCreated")]},
            "DeleteMarkerCreated",
            id="delete-marker",
        ),
        pytest.param(
            eventbridge("gone.jpg", detail_type="Object Deleted", reason="DeleteObject"),
            "Object Deleted",
            id="eventbridge-deletion",
        ),
        pytest.param(
            minio_webhook("a.jpg", event_name="s3:ObjectRemoved:Delete"),
            "ObjectRemoved:Delete",
            id="minio-deletion",
        ),
        pytest.param(
            minio_webhook("a.jpg", event_name="s3:ObjectCreated:PutTagging"),
            "metadata only",
            id="minio-tagging-is-not-new-content",
        ),
        pytest.param(
            {"Records": [s3_record("photos%2F2024%2F", size=0)]},
            "folder marker",
            id="folder-marker",
        ),
        pytest.param(
            {"Records": [s3_record("a.jpg", event_name="ObjectRestore:Completed")]},
            "ObjectRestore",
            id="glacier-restore",
        ),
        pytest.param(
            {
                "Type": "SubscriptionConfirmation",
                "TopicArn": "arn:aws:sns:us-west-2:123456789012:uploads",
                "Token": "2336412f37",
                "SubscribeURL": "https://sns.us-west-2.amazonaws.com/?Action=ConfirmSubscription",
            },
            "SubscriptionConfirmation",
            id="sns-subscription-confirmation",
        ),
    ],
)
def test_everything_but_creations_is_ignored_with_a_reason(body: Any, reason_fragment: str) -> None:
    decoded = decode_notification(body)
    assert decoded.events == ()
    assert len(decoded.ignored) == 1
    assert reason_fragment in decoded.ignored[0]


def test_a_batch_keeps_creations_and_lists_the_rest() -> None:
    body = {
        "Records": [
            s3_record("one.jpg"),
            s3_record("two.jpg", event_name="ObjectRemoved:Delete"),
            s3_record("three.jpg", event_name="ObjectCreated:Copy"),
        ]
    }
    decoded = decode_notification(body)
    assert [(e.key, e.event_name) for e in decoded.events] == [
        ("one.jpg", "ObjectCreated:Put"),
        ("three.jpg", "ObjectCreated:Copy"),
    ]
    assert decoded.ignored == ("ObjectRemoved:Delete: s3://amzn-s3-demo-bucket/two.jpg",)


def test_bytes_bodies_decode_like_text() -> None:
    assert decode_notification(json.dumps(MOTO_RECORD).encode()) == decode_notification(MOTO_RECORD)


def test_the_uri_carries_the_decoded_key_verbatim() -> None:
    (event,) = decode_notification(minio_webhook("a%2Fb+c%23d%3Fe.jpg")).events
    assert event.uri == "s3://images/a/b c#d?e.jpg"


def test_identity_prefers_version_then_etag_then_time() -> None:
    event = ObjectEvent("b", "k", etag="e", version_id="v", event_time="t")
    assert event.identity() == ("version", "v")
    assert ObjectEvent("b", "k", etag="e", event_time="t").identity() == ("etag", "e")
    assert ObjectEvent("b", "k", event_time="t").identity() == ("time", "t")
    assert ObjectEvent("b", "k").identity() == ("none", "")


def test_moto_eventbridge_epoch_time_and_etag_spelling() -> None:
    body = eventbridge("a.jpg")
    body["time"] = 1_700_000_000.5
    obj = body["detail"]["object"]
    obj["eTag"] = obj.pop("etag")
    (event,) = decode_notification(body).events
    assert event.event_time == "2023-11-14T22:13:20.500Z"
    assert event.etag == "b1946ac92492d2347c6235b4d2611184"


@pytest.mark.parametrize(
    "body",
    [
        pytest.param("this is not json", id="not-json"),
        pytest.param(b"\xff\xfe{", id="not-utf8"),
        pytest.param("[1, 2]", id="json-array"),
        pytest.param({"hello": "world"}, id="unknown-object"),
        pytest.param({"Records": "none"}, id="records-not-a-list"),
        pytest.param({"Records": [{"eventName": "ObjectCreated:Put"}]}, id="record-without-s3"),
        pytest.param({"Records": [s3_record("%FF%FE.jpg")]}, id="key-not-utf8"),
        pytest.param({"Records": [s3_record("a.jpg", size=-1)]}, id="negative-size"),
        pytest.param(
            {"Type": "Notification", "TopicArn": "arn:aws:sns:x", "Message": "not json"},
            id="sns-message-not-json",
        ),
        pytest.param(
            {"source": "aws.s3", "detail-type": "Object Created", "detail": {}},
            id="eventbridge-without-bucket",
        ),
    ],
)
def test_bodies_in_no_known_shape_are_refused(body: Any) -> None:
    with pytest.raises(UndecodableNotification):
        decode_notification(body)


def test_nesting_is_bounded() -> None:
    body: dict[str, Any] = MOTO_RECORD
    for _ in range(6):
        body = sns_envelope(body)
    with pytest.raises(UndecodableNotification, match="nested"):
        decode_notification(body)
