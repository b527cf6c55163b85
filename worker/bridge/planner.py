"""One object event -> the job to send, or the reason to send none. Pure.

Objects under a results location are never planned: the worker writes result.json, mask
PNGs and overlay.png there, and a bucket notification on that bucket would otherwise feed
the bridge its own output, forever.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from worker.bridge.job_ids import bridge_job_id
from worker.bridge.notifications import ObjectEvent
from worker.bridge.rules import Rule, match_rule


@dataclass(frozen=True)
class PlannedJob:
    event: ObjectEvent
    rule: Rule
    job: dict[str, Any]

    @property
    def job_id(self) -> str:
        return str(self.job["job_id"])


@dataclass(frozen=True)
class Skip:
    event: ObjectEvent
    reason: str


def results_prefixes(rules: Iterable[Rule], results_uri: str | None) -> tuple[str, ...]:
    """Every S3 location a rule's jobs write to: the rules' outputs and the default."""
    outputs = [rule.output for rule in rules] + [results_uri]
    return tuple(sorted({o.rstrip("/") + "/" for o in outputs if o and o.startswith("s3://")}))


def plan_job(
    event: ObjectEvent,
    rules: Sequence[Rule],
    *,
    results_prefixes: Sequence[str] = (),
    now_s: float | None = None,
) -> PlannedJob | Skip:
    """``now_s``: when the event is planned (the rule's run period; default: now)."""
    under = next((p for p in results_prefixes if event.uri.startswith(p)), None)
    if under is not None:
        return Skip(event, f"under a results location ({under}): never analysed")
    rule = match_rule(rules, event)
    if rule is None:
        return Skip(event, "no rule matches")
    job: dict[str, Any] = json.loads(json.dumps(rule.template))  # the rule's copy stays intact
    job["job_id"] = bridge_job_id(event, rule)
    job["images"] = [event.uri]
    run_id = rule.run_id(time.time() if now_s is None else now_s)
    if run_id is not None:
        job["run"] = run_id
    return PlannedJob(event, rule, job)
