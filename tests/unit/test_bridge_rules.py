"""Rules: which object gets which job; first match wins; bad files stop the bridge early."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from worker.bridge.notifications import ObjectEvent
from worker.bridge.rules import (
    DEFAULT_RULES,
    Rule,
    RulesError,
    load_rules,
    match_rule,
    parse_rules,
    template_sha256,
)

RULES: dict[str, Any] = {
    "rules": [
        {
            "name": "receipts",
            "bucket": "inbox",
            "prefix": "receipts/",
            "suffix": [".jpg", ".png"],
            "job": {
                "task": "custom",
                "prompt": "the total and the date",
                "response_schema": {"type": "object", "properties": {"total": {"type": "number"}}},
                "output": "s3://results/receipts",
            },
        },
        {
            "name": "pets",
            "bucket": "inbox",
            "suffix": [".jpg", ".jpeg", ".heic"],
            "job": {"task": "classify", "labels": ["cat", "dog"], "options": {"max_items": 2}},
        },
        {"name": "anything-else", "prefix": "scans/", "job": {"task": "caption"}},
    ]
}


@pytest.mark.parametrize(
    ("bucket", "key", "rule_name"),
    [
        pytest.param("inbox", "receipts/2024/a.jpg", "receipts", id="bucket-prefix-suffix"),
        pytest.param("inbox", "receipts/2024/A.PNG", "receipts", id="suffix-ignores-case"),
        pytest.param("inbox", "receipts/2024/a.heic", "pets", id="first-rule-suffix-misses"),
        pytest.param("inbox", "Receipts/a.jpg", "pets", id="prefix-is-case-sensitive"),
        pytest.param("inbox", "photos/dog.JPEG", "pets", id="second-rule"),
        pytest.param("other", "receipts/a.jpg", None, id="other-bucket-no-rule"),
        pytest.param("other", "scans/page 1.tif", "anything-else", id="any-bucket-no-suffix"),
        pytest.param("inbox", "notes.txt", None, id="no-match"),
    ],
)
def test_first_matching_rule_wins(bucket: str, key: str, rule_name: str | None) -> None:
    rules = parse_rules(RULES)
    rule = match_rule(rules, ObjectEvent(bucket, key))
    assert (rule.name if rule else None) == rule_name


def test_default_rules_caption_images_only() -> None:
    assert match_rule(DEFAULT_RULES, ObjectEvent("any", "a/b/IMG_0001.HEIC")) is not None
    assert match_rule(DEFAULT_RULES, ObjectEvent("any", "a/b/report.pdf")) is None
    assert DEFAULT_RULES[0].template == {"task": "caption"}


def test_template_hash_ignores_key_order_and_spacing() -> None:
    assert template_sha256({"task": "vqa", "prompt": "why?"}) == template_sha256(
        json.loads('{ "prompt" : "why?",  "task": "vqa" }')
    )
    assert template_sha256({"task": "vqa", "prompt": "why?"}) != template_sha256(
        {"task": "vqa", "prompt": "why not?"}
    )


def test_rules_load_from_json_file_inline_json_and_yaml(tmp_path: Path) -> None:
    as_json = tmp_path / "rules.json"
    as_json.write_text(json.dumps(RULES))
    as_yaml = tmp_path / "rules.yaml"
    as_yaml.write_text(
        "rules:\n"
        "  - name: receipts\n"
        "    bucket: inbox\n"
        "    prefix: receipts/\n"
        "    suffix: ['.jpg', '.png']\n"
        "    job:\n"
        "      task: custom\n"
        "      prompt: the total and the date\n"
        "      response_schema: {type: object, properties: {total: {type: number}}}\n"
        "      output: s3://results/receipts\n"
        "  - name: pets\n"
        "    bucket: inbox\n"
        "    suffix: ['.jpg', '.jpeg', '.heic']\n"
        "    job: {task: classify, labels: [cat, dog], options: {max_items: 2}}\n"
        "  - name: anything-else\n"
        "    prefix: scans/\n"
        "    job: {task: caption}\n"
    )
    from_json = load_rules(str(as_json))
    assert load_rules(json.dumps(RULES)) == from_json
    pytest.importorskip("yaml")
    assert load_rules(str(as_yaml)) == from_json
    assert from_json[0].template_sha256 == template_sha256(RULES["rules"][0]["job"])


def test_a_rule_owns_a_copy_of_its_template() -> None:
    doc = json.loads(json.dumps(RULES))
    rules = parse_rules(doc)
    doc["rules"][1]["job"]["labels"].append("ferret")
    assert rules[1].template["labels"] == ["cat", "dog"]


def _with(**changes: Any) -> dict[str, Any]:
    rule: dict[str, Any] = {"name": "r", "job": {"task": "caption"}}
    rule.update(changes)
    return {"rules": [rule]}


@pytest.mark.parametrize(
    ("doc", "message"),
    [
        pytest.param([], "one field", id="not-an-object"),
        pytest.param({"rules": []}, "non-empty", id="empty"),
        pytest.param({"rules": [], "version": 2}, "one field", id="unknown-top-level"),
        pytest.param(_with(sufix=[".jpg"]), "unknown field", id="typo-in-rule-field"),
        pytest.param(_with(name="has space"), "name must match", id="bad-name"),
        pytest.param(_with(suffix=".jpg"), "list of strings", id="suffix-not-a-list"),
        pytest.param(_with(bucket=""), "bucket", id="empty-bucket"),
        pytest.param(
            _with(job={"task": "caption", "images": ["s3://x/y"]}), "cannot be", id="images"
        ),
        pytest.param(_with(job={"task": "caption", "job_id": "x"}), "cannot be", id="job-id"),
        pytest.param(_with(job={"task": "sketch"}), "not a valid job", id="unknown-task"),
        pytest.param(_with(job={"task": "classify"}), "not a valid job", id="classify-no-labels"),
        pytest.param(_with(job={"task": "compare"}), "not a valid job", id="compare-needs-two"),
        pytest.param(
            _with(job={"task": "caption", "options": {"max_itemz": 3}}),
            "not a valid job",
            id="unknown-option",
        ),
        pytest.param(
            {"rules": [{"name": "a", "job": {"task": "caption"}}] * 2}, "used twice", id="dup"
        ),
    ],
)
def test_bad_rules_are_refused_naming_the_problem(doc: Any, message: str) -> None:
    with pytest.raises(RulesError, match=message):
        parse_rules(doc)


def test_unreadable_sources_are_rules_errors(tmp_path: Path) -> None:
    with pytest.raises(RulesError, match="cannot read"):
        load_rules(str(tmp_path / "missing.json"))
    broken = tmp_path / "broken.json"
    broken.write_text("{rules: [")
    with pytest.raises(RulesError, match="not valid JSON"):
        load_rules(str(broken))
    with pytest.raises(RulesError, match="inline rules"):
        load_rules('{"rules": [')


def test_rule_output_property() -> None:
    rule = Rule(name="r", template={"task": "caption", "output": "s3://out/x"})
    assert rule.output == "s3://out/x"
    assert Rule(name="r", template={"task": "caption"}).output is None


def test_a_rule_may_count_its_jobs_in_a_run_a_day_or_an_hour() -> None:
    from worker.bridge.notifications import ObjectEvent
    from worker.bridge.planner import PlannedJob, plan_job

    rules = parse_rules(
        {
            "rules": [
                {"name": "line-cams", "prefix": "cams/", "run": "daily",
                 "job": {"task": "detect"}},
                {"name": "hourly", "prefix": "h/", "run": "hourly", "job": {"task": "caption"}},
                {"name": "plain", "job": {"task": "caption"}},
            ]
        }
    )  # fmt: skip
    at_s = 1_796_302_800.0  # 2026-12-03 13:00 UTC
    daily = plan_job(ObjectEvent("inbox", "cams/1.jpg"), rules, now_s=at_s)
    hourly = plan_job(ObjectEvent("inbox", "h/1.jpg"), rules, now_s=at_s)
    plain = plan_job(ObjectEvent("inbox", "x/1.jpg"), rules, now_s=at_s)
    assert isinstance(daily, PlannedJob) and daily.job["run"] == "line-cams-20261203"
    assert isinstance(hourly, PlannedJob) and hourly.job["run"] == "hourly-2026120313"
    assert isinstance(plain, PlannedJob) and "run" not in plain.job
    # the next day is the next run; the job (its id) is the same job
    later = plan_job(ObjectEvent("inbox", "cams/1.jpg"), rules, now_s=at_s + 86_400)
    assert isinstance(later, PlannedJob) and later.job["run"] == "line-cams-20261204"
    assert later.job_id == daily.job_id


def test_a_rule_s_run_must_be_a_known_period() -> None:
    with pytest.raises(RulesError, match='run must be "daily", "hourly" or "none"'):
        parse_rules({"rules": [{"name": "r", "run": "weekly", "job": {"task": "caption"}}]})
