"""Which job an object gets: rules read from a file, first match wins.

    {"rules": [
      {"name": "receipts", "bucket": "inbox", "prefix": "receipts/", "suffix": [".jpg", ".png"],
       "job": {"task": "custom", "prompt": "the total and the date",
               "response_schema": {"type": "object"}, "output": "s3://results/receipts"}},
      {"name": "photos", "suffix": [".jpg", ".jpeg", ".heic"], "job": {"task": "caption"}}
    ]}

`bucket` (exact; absent = any), `prefix` (case-sensitive, as S3 keys are) and `suffix` (a list;
matched ignoring case, because cameras write `.JPG` and phones `.jpeg`) select objects;
`job` is the template: any job field but `job_id` and `images`, which the bridge fills in.
`run` (optional) counts the rule's jobs in runs (docs/runs.md): `"daily"` (one run a UTC
day, `{name}-{yyyymmdd}`), `"hourly"` (`{name}-{yyyymmddhh}`) or `"none"` (the default).
Rules are JSON; YAML too when PyYAML is importable. A rules file is checked whole at
start-up, each template with the worker's own `parse_job`, so a typo stops the bridge
before the first event instead of dropping every event afterwards.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from tasks.errors import InvalidJob
from worker.bridge.notifications import ObjectEvent

TEMPLATE_FIELDS = frozenset(
    {"task", "prompt", "labels", "response_schema", "model", "output", "options"}
)
RULE_FIELDS = frozenset({"name", "bucket", "prefix", "suffix", "job", "run"})
# how a rule's jobs are grouped into runs: the strftime of the UTC time their event is planned
RUN_PERIODS = {"daily": "%Y%m%d", "hourly": "%Y%m%d%H"}
RULE_NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$"
# The formats the worker decodes (worker.images.sniff.sniff_image_format), by their usual names.
IMAGE_SUFFIXES = (
    ".jpg",
    ".jpeg",
    ".png",
    ".webp",
    ".gif",
    ".bmp",
    ".tif",
    ".tiff",
    ".heic",
    ".heif",
)


class RulesError(ValueError):
    """A rules file that cannot be used; the message names the rule and the field."""


def template_sha256(template: Mapping[str, Any]) -> str:
    """Hash of a template's canonical JSON: key order and spacing in the file do not count."""
    canonical = json.dumps(template, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(canonical.encode("utf-8")).hexdigest()


@dataclass(frozen=True)
class Rule:
    name: str
    template: Mapping[str, Any] = field(hash=False)
    bucket: str | None = None
    prefix: str = ""
    suffixes: tuple[str, ...] = ()
    run: str | None = None  # "daily" | "hourly" (RUN_PERIODS), None: no run
    template_sha256: str = field(init=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "template_sha256", template_sha256(self.template))

    def matches(self, event: ObjectEvent) -> bool:
        if self.bucket is not None and event.bucket != self.bucket:
            return False
        if not event.key.startswith(self.prefix):
            return False
        if not self.suffixes:
            return True
        key = event.key.casefold()
        return any(key.endswith(suffix.casefold()) for suffix in self.suffixes)

    def run_id(self, now_s: float) -> str | None:
        """The run a job planned at `now_s` is counted in (None: the rule names none)."""
        if self.run is None:
            return None
        stamp = datetime.fromtimestamp(now_s, UTC).strftime(RUN_PERIODS[self.run])
        return f"{self.name}-{stamp}"

    @property
    def output(self) -> str | None:
        value = self.template.get("output")
        return value if isinstance(value, str) else None


# Without a rules file: a caption for every image in any bucket.
DEFAULT_RULES: tuple[Rule, ...] = (
    Rule(name="caption-images", template={"task": "caption"}, suffixes=IMAGE_SUFFIXES),
)


def match_rule(rules: Sequence[Rule], event: ObjectEvent) -> Rule | None:
    """The first rule that selects the object, or None."""
    return next((rule for rule in rules if rule.matches(event)), None)


def load_rules(source: str) -> tuple[Rule, ...]:
    """Rules from a file path (`.json`, `.yaml`, `.yml`) or from inline JSON (`{...}`), the
    form an environment variable such as GVW_BRIDGE_RULES can carry."""
    text = source.strip()
    if text.startswith("{"):
        return parse_rules(_json(text, where="inline rules"), where="inline rules")
    path = Path(source)
    try:
        content = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise RulesError(f"cannot read rules file {source}: {exc.strerror or exc}") from exc
    if path.suffix.lower() in (".yaml", ".yml"):
        return parse_rules(_yaml(content, where=source), where=source)
    return parse_rules(_json(content, where=source), where=source)


def parse_rules(doc: Any, *, where: str = "rules") -> tuple[Rule, ...]:
    if not isinstance(doc, Mapping) or set(doc) != {"rules"}:
        raise RulesError(f'{where}: expected an object with one field, "rules" (a list)')
    items = doc["rules"]
    if not isinstance(items, list) or not items:
        raise RulesError(f"{where}: rules must be a non-empty list")
    rules = tuple(_parse_rule(item, where=f"{where}: rules[{i}]") for i, item in enumerate(items))
    seen: set[str] = set()
    for rule in rules:
        if rule.name in seen:
            # the name is part of every job id: two rules of one name would share ids
            raise RulesError(f"{where}: rule name {rule.name!r} is used twice")
        seen.add(rule.name)
    return rules


def _parse_rule(item: Any, *, where: str) -> Rule:
    if not isinstance(item, Mapping):
        raise RulesError(f"{where}: a rule must be an object")
    unknown = sorted(set(item) - RULE_FIELDS)
    if unknown:
        raise RulesError(f"{where}: unknown field(s) {', '.join(unknown)}")
    name = item.get("name")
    if not isinstance(name, str) or not re.match(RULE_NAME_PATTERN, name):
        raise RulesError(f"{where}: name must match {RULE_NAME_PATTERN}")
    where = f"{where} ({name})"
    bucket = item.get("bucket")
    if bucket is not None and (not isinstance(bucket, str) or not bucket):
        raise RulesError(f"{where}: bucket must be a bucket name")
    prefix = item.get("prefix", "")
    if not isinstance(prefix, str):
        raise RulesError(f"{where}: prefix must be a string")
    suffixes = item.get("suffix", [])
    if not isinstance(suffixes, list) or not all(isinstance(s, str) and s for s in suffixes):
        raise RulesError(f'{where}: suffix must be a list of strings, like [".jpg", ".png"]')
    template = item.get("job")
    if not isinstance(template, Mapping):
        raise RulesError(f"{where}: job must be an object (the job template)")
    unknown = sorted(set(template) - TEMPLATE_FIELDS)
    if unknown:
        raise RulesError(
            f"{where}: job field(s) {', '.join(unknown)} cannot be in a template "
            f"(allowed: {', '.join(sorted(TEMPLATE_FIELDS))})"
        )
    run = item.get("run", "none")
    if run != "none" and run not in RUN_PERIODS:
        raise RulesError(f'{where}: run must be "daily", "hourly" or "none"')
    # A copy through JSON: the rule owns plain data nobody else can change under it.
    rule = Rule(
        name=name,
        template=json.loads(json.dumps(template)),
        bucket=bucket,
        prefix=prefix,
        suffixes=tuple(suffixes),
        run=None if run == "none" else run,
    )
    _check_template(rule, where=where)
    return rule


def _check_template(rule: Rule, *, where: str) -> None:
    from worker.contract.jobs import parse_job

    sample = {**rule.template, "job_id": "rule-check", "images": ["s3://bucket/image.jpg"]}
    try:
        parse_job(sample)
    except InvalidJob as exc:
        raise RulesError(f"{where}: the job template is not a valid job: {exc.message}") from exc


def _json(text: str, *, where: str) -> Any:
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise RulesError(f"{where}: not valid JSON: {exc}") from exc


def _yaml(text: str, *, where: str) -> Any:
    try:
        import yaml
    except ImportError as exc:  # PyYAML is not a dependency of the worker
        raise RulesError(
            f"{where}: YAML rules need PyYAML installed; or write them as JSON"
        ) from exc
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise RulesError(f"{where}: not valid YAML: {exc}") from exc
