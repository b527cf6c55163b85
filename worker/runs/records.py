"""A run's records in storage (docs/runs.md): its definition, its members, its summary.

Everything of a run lives under `{results}/_runs/{run_id}/`, beside the jobs' own folders
(`_` cannot begin a job id, so no job's folder is ever a run's):

    run.json             the definition: what was listed, the job template, the options
    members/00000.jsonl  who is in it, one job a line, written as the run sends them
    summary.json         counts, spend, rate and ETA, kept current by the workers

Durable without Redis: any machine with access to the results reads a run's definition,
members and last summary, and can count its jobs from their records.
"""

from __future__ import annotations

import re
import secrets
import time
from datetime import UTC, datetime
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, StringConstraints

from worker.contract.jobs import JOB_ID_PATTERN
from worker.storage import join_uri

RUN_SCHEMA_VERSION = 1
RUNS_FOLDER = "_runs"
RUN_NAME = "run.json"
SUMMARY_NAME = "summary.json"
MEMBERS_FOLDER = "members"
# a run id is a job id's shape: a producer may name it on a job, and it is one folder
RUN_ID_PATTERN = JOB_ID_PATTERN
_SLUG = re.compile(r"[^A-Za-z0-9._-]+")

RunId = Annotated[str, StringConstraints(pattern=RUN_ID_PATTERN)]


def new_run_id(name: str | None = None, *, now_s: float | None = None) -> str:
    """``run-20261203-1a2b3c4d`` (or ``{name-slug}-20261203-1a2b3c4d``): sortable by day,
    readable, and unguessable enough that runs do not collide."""
    day = datetime.fromtimestamp(now_s if now_s is not None else time.time(), UTC)
    slug = _SLUG.sub("-", name or "").strip("-._")[:60] or "run"
    return f"{slug}-{day:%Y%m%d}-{secrets.token_hex(4)}"


def runs_folder(results: str) -> str:
    return join_uri(results, RUNS_FOLDER)


def run_folder(results: str, run_id: str) -> str:
    return join_uri(results, RUNS_FOLDER, run_id)


def run_uri(results: str, run_id: str) -> str:
    return join_uri(run_folder(results, run_id), RUN_NAME)


def summary_uri(results: str, run_id: str) -> str:
    return join_uri(run_folder(results, run_id), SUMMARY_NAME)


def members_uri(results: str, run_id: str, part: int) -> str:
    return join_uri(run_folder(results, run_id), MEMBERS_FOLDER, f"{part:05d}.jsonl")


def utc_iso(seconds: float) -> str:
    return datetime.fromtimestamp(seconds, UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


class RunSource(BaseModel):
    """What the run was made from: a listed prefix (`gvw enqueue-prefix`), or jobs a
    producer named the run on."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    kind: Literal["prefix", "jobs"] = "jobs"
    prefix: str | None = None
    suffixes: list[str] = Field(default_factory=list)


class RunDefinition(BaseModel):
    """run.json: written when the run is created; `gvw runs resume --max-usd` rewrites it."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    schema_version: int = RUN_SCHEMA_VERSION
    run_id: RunId
    name: str | None = None
    created_at: str
    results: str  # the results folder the run's jobs write to
    source: RunSource = Field(default_factory=RunSource)
    template: dict[str, Any] = Field(default_factory=dict)  # every member's job, but images
    max_usd: float | None = None
    # where the run's end is told (docs/events.md): run.completed
    notify: list[str] = Field(default_factory=list)

    def to_json_bytes(self) -> bytes:
        return self.model_dump_json(indent=2).encode()


class Member(BaseModel):
    """One line of members/*.jsonl: a job of the run, enough to send it again."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    job_id: str
    images: list[str]
    etag: str | None = None
    # sent: queued by this run; done: committed before the run (a rerun skips it);
    # queued: sent by an earlier, unfinished run of the same listing
    sent: Literal["sent", "done", "queued"] = "sent"
    # the job this one replaces (`gvw runs retry`)
    replaces: str | None = None


class RunSummary(BaseModel):
    """summary.json, and what `gvw runs show` and `VisionClient.run_status` report."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    schema_version: int = RUN_SCHEMA_VERSION
    run_id: str
    name: str | None = None
    state: Literal["running", "finished", "unknown"]
    sealed: bool  # every member is known (the listing is complete)
    members: int
    counts: dict[str, int]  # queued, running, waiting, batched, held, succeeded, failed
    failed_by_code: dict[str, int]
    spent_usd: float  # what the ended jobs' answers cost
    max_usd: float | None = None
    reserved_usd: float = 0.0  # estimates of calls under way, held against the cap
    rate_per_min: float  # jobs ended per minute, over the last few minutes
    eta_s: float | None  # time left at that rate (None: no rate yet, or not sealed)
    created_at: str | None = None
    finished_at: str | None = None
    updated_at: str
    summary_uri: str | None = None
    source: Literal["fleet", "storage"] = "fleet"  # live counts, or the last summary.json
    round: int = 0  # how often `gvw runs retry` reopened the finished run

    def to_json_bytes(self) -> bytes:
        return self.model_dump_json(indent=2).encode()
