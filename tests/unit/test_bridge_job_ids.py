"""Deterministic job ids: duplicates collapse, new content and new rules do not."""

from __future__ import annotations

import re
from dataclasses import replace

import pytest

from worker.bridge.job_ids import bridge_job_id, key_slug
from worker.bridge.notifications import ObjectEvent, decode_notification
from worker.bridge.planner import PlannedJob, Skip, plan_job, results_prefixes
from worker.bridge.rules import Rule
from worker.contract.jobs import JOB_ID_PATTERN

RULE = Rule(name="captions", template={"task": "caption"})
EVENT = ObjectEvent(
    bucket="inbox",
    key="photos/2024/Happy Face +1.jpg",
    size_bytes=1024,
    etag="d41d8cd98f00b204e9800998ecf8427e",
    event_time="2024-05-06T07:08:09.123Z",
)
VERSIONED = replace(EVENT, version_id="096fKKXTRTtl3on89fVO.nfljtsv6qko")


def test_same_event_same_id() -> None:
    assert bridge_job_id(EVENT, RULE) == bridge_job_id(replace(EVENT), RULE)
    # what differs between deliveries of one object does not count
    redelivered = replace(
        EVENT, event_time="2024-05-06T07:09:00.000Z", event_name="ObjectCreated:Copy"
    )
    assert bridge_job_id(redelivered, RULE) == bridge_job_id(EVENT, RULE)
    assert bridge_job_id(replace(VERSIONED, etag=None), RULE) == bridge_job_id(VERSIONED, RULE)


@pytest.mark.parametrize(
    ("event", "rule"),
    [
        pytest.param(replace(EVENT, etag="0cc175b9c0f1b6a831c399e269772661"), RULE, id="new-etag"),
        pytest.param(VERSIONED, RULE, id="versioned-vs-unversioned"),
        pytest.param(
            replace(VERSIONED, version_id="Mro8eIYV3p45BT0ac8hjHg1houSdS1a."),
            RULE,
            id="new-version",
        ),
        pytest.param(replace(EVENT, key="photos/2024/happy face +1.jpg"), RULE, id="other-key"),
        pytest.param(replace(EVENT, bucket="inbox2"), RULE, id="other-bucket"),
        pytest.param(EVENT, Rule(name="captions-2", template={"task": "caption"}), id="rule-name"),
        pytest.param(
            EVENT,
            Rule(name="captions", template={"task": "caption", "prompt": "one line"}),
            id="rule-template",
        ),
    ],
)
def test_anything_that_changes_the_work_changes_the_id(event: ObjectEvent, rule: Rule) -> None:
    assert bridge_job_id(event, rule) != bridge_job_id(EVENT, RULE)


def test_the_same_object_through_s3_records_and_eventbridge_gets_one_id() -> None:
    record = {
        "eventName": "ObjectCreated:Put",
        "eventTime": "2024-05-06T07:08:09.123Z",
        "s3": {
            "bucket": {"name": "inbox"},
            "object": {"key": "a+b%2B.jpg", "eTag": "abc", "versionId": "v1", "size": 3},
        },
    }
    bridge = {
        "source": "aws.s3",
        "detail-type": "Object Created",
        "time": "2024-05-06T07:08:10Z",
        "detail": {
            "bucket": {"name": "inbox"},
            "object": {"key": "a b+.jpg", "etag": "abc", "version-id": "v1", "size": 3},
        },
    }
    (one,) = decode_notification({"Records": [record]}).events
    (two,) = decode_notification(bridge).events
    assert bridge_job_id(one, RULE) == bridge_job_id(two, RULE)


@pytest.mark.parametrize(
    ("key", "slug"),
    [
        pytest.param("photos/2024/Happy Face +1.jpg", "happy-face-1.jpg", id="spaces-plus"),
        pytest.param("résumés/Café au lait.PNG", "cafe-au-lait.png", id="accents-folded"),
        pytest.param("in/日本.webp", "webp", id="cjk-dropped"),
        pytest.param("in/日本", "", id="nothing-left"),
        pytest.param("in/..hidden..", "hidden", id="dots-trimmed"),
        pytest.param("a/" + "x" * 200 + ".jpg", "x" * 40, id="long-name-cut"),
        pytest.param("folder/", "folder", id="trailing-slash"),
    ],
)
def test_key_slug(key: str, slug: str) -> None:
    assert key_slug(key) == slug


@pytest.mark.parametrize(
    "key",
    ["a.jpg", "日本/日本.png", "x/" + "é" * 500 + ".jpg", "-.-.jpg", "a b/c+d/%25.heic", "_"],
)
def test_ids_always_match_the_contract_pattern(key: str) -> None:
    job_id = bridge_job_id(replace(EVENT, key=key), RULE)
    assert re.match(JOB_ID_PATTERN, job_id), job_id
    assert job_id.startswith("s3-")
    assert re.search(r"-[0-9a-f]{40}$", job_id) or re.fullmatch(r"s3-[0-9a-f]{40}", job_id)


def test_plan_fills_in_id_and_image_and_keeps_the_template() -> None:
    rule = Rule(name="pets", template={"task": "classify", "labels": ["cat", "dog"]})
    plan = plan_job(EVENT, [rule])
    assert isinstance(plan, PlannedJob)
    assert plan.job == {
        "task": "classify",
        "labels": ["cat", "dog"],
        "job_id": bridge_job_id(EVENT, rule),
        "images": ["s3://inbox/photos/2024/Happy Face +1.jpg"],
    }
    plan.job["labels"].append("ferret")
    assert rule.template["labels"] == ["cat", "dog"]


def test_plan_skips_unmatched_objects_and_results() -> None:
    rules = [
        Rule(name="r", template={"task": "caption", "output": "s3://inbox/captions"}),
    ]
    prefixes = results_prefixes(rules, "s3://results/vision/")
    assert prefixes == ("s3://inbox/captions/", "s3://results/vision/")
    for key, bucket in (
        ("captions/s3-a/overlay.png", "inbox"),
        ("vision/x/result.json", "results"),
    ):
        plan = plan_job(ObjectEvent(bucket, key), rules, results_prefixes=prefixes)
        assert isinstance(plan, Skip)
        assert "results location" in plan.reason
    # a sibling whose name merely starts alike is not under the results
    plan = plan_job(ObjectEvent("inbox", "captions-old/a.png"), rules, results_prefixes=prefixes)
    assert isinstance(plan, PlannedJob)
    unmatched = plan_job(EVENT, [Rule(name="r", template={"task": "caption"}, bucket="other")])
    assert isinstance(unmatched, Skip)
    assert unmatched.reason == "no rule matches"
