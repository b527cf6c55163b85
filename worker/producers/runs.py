"""Runs from a producer's side: make one, fill it as its jobs are sent, seal it, read it.

A run (docs/runs.md) is written to storage first (run.json), so that it exists for any
reader before its first job does; each group of members is counted in the fleet's ledger
(Redis) *before* its jobs are sent, so a worker's first move finds them, and written to
storage in parts of `MEMBERS_PER_PART` (one request per part, not per job); sealing says
the membership is complete, after which the run's last end finishes it.
"""

from __future__ import annotations

import json
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from tasks.errors import FleetUnavailable, InvalidJob
from worker.runs.ledger import RunLedger
from worker.runs.records import (
    Member,
    RunDefinition,
    RunSource,
    RunSummary,
    new_run_id,
    summary_uri,
    utc_iso,
)
from worker.runs.status import summarize
from worker.runs.store import MEMBERS_PER_PART, RunStore
from worker.storage.port import ObjectStore


@dataclass
class RunWriter:
    """One run being filled by this process."""

    definition: RunDefinition
    store: RunStore
    ledger: RunLedger | None
    part: int = 0
    buffer: list[Member] = field(default_factory=list)
    members: int = 0

    @property
    def run_id(self) -> str:
        return self.definition.run_id

    @property
    def results(self) -> str:
        return self.definition.results

    def sending(self, members: Sequence[Member]) -> None:
        """These jobs are about to be sent: counted as queued first."""
        if self.ledger is not None and members:
            self.ledger.add_members(self.run_id, [m.job_id for m in members], folder=self.results)
        self._keep(members)

    def ended_before(self, members: Sequence[Member], states: Mapping[str, str]) -> None:
        """These jobs were committed before the run sent them (a rerun): counted as the
        ended members they are (`states`: job id -> ledger state)."""
        if self.ledger is not None and members:
            self.ledger.add_ended(
                self.run_id, {m.job_id: states[m.job_id] for m in members}, folder=self.results
            )
        self._keep(members)

    def _keep(self, members: Sequence[Member]) -> None:
        self.buffer.extend(members)
        self.members += len(members)
        while len(self.buffer) >= MEMBERS_PER_PART:
            self._write_part(self.buffer[:MEMBERS_PER_PART])
            del self.buffer[:MEMBERS_PER_PART]

    def _write_part(self, members: Sequence[Member]) -> None:
        self.store.write_members(self.results, self.run_id, self.part, members)
        self.part += 1

    def flush(self) -> None:
        """Members kept so far go to storage (a partial part is rewritten, whole, later)."""
        if self.buffer:
            self.store.write_members(self.results, self.run_id, self.part, self.buffer)

    def seal(self) -> RunSummary | None:
        """Every member is known: storage has them all, and the fleet's last end (or this
        seal, when they have all ended) finishes the run."""
        if self.buffer:
            self._write_part(self.buffer)
            self.buffer = []
        if self.ledger is None:
            return None
        return seal_run(self.ledger, self.store, self.run_id, self.results)


def seal_run(ledger: RunLedger, store: RunStore, run_id: str, results: str) -> RunSummary | None:
    """Seal a run and write its summary.json; when the run has ended already, the seal
    finished it, and that summary is its final one."""
    move = ledger.seal(run_id)
    summary = run_summary(run_id, results, ledger, store)
    if summary is not None:
        store.write_summary(results, summary)
        if move.finished:
            ledger.final_written(run_id)
    return summary


def start_run(
    stores: ObjectStore,
    ledger: RunLedger | None,
    *,
    results: str,
    name: str | None,
    template: Mapping[str, Any],
    source: RunSource,
    max_usd: float | None = None,
    notify: Sequence[str] = (),
) -> RunWriter:
    """Create a run: its run.json written once (a new id for each run)."""
    store = RunStore(stores)
    definition = RunDefinition(
        run_id=new_run_id(name),
        name=name,
        created_at=utc_iso(time.time()),
        results=results,
        source=source,
        template=dict(template),
        max_usd=max_usd,
        notify=list(notify),
    )
    if not store.create(definition):
        raise InvalidJob(f"run {definition.run_id} exists already")
    if ledger is not None:
        ledger.open(definition.run_id, folder=results)
        ledger.set_cap(definition.run_id, max_usd)
    return RunWriter(definition, store, ledger)


def resume_run(
    store: RunStore,
    ledger: RunLedger,
    definition: RunDefinition,
    *,
    max_usd: float | None,
    keep_cap: bool,
) -> list[dict[str, Any]]:
    """Set the run's cap (`max_usd`; None lifts it, unless `keep_cap`) in run.json and in
    the fleet, and return the jobs its cap held, no longer held (to be sent again)."""
    if not keep_cap:
        definition = definition.model_copy(update={"max_usd": max_usd})
        store.update(definition)
        ledger.set_cap(definition.run_id, max_usd)
    released = ledger.release(definition.run_id)
    return [json.loads(job) for job in released.values()]


def continue_run(
    stores: ObjectStore, ledger: RunLedger | None, *, results: str, run_id: str
) -> RunWriter | None:
    """A run an interrupted producer left unsealed, to fill further; None when storage
    has no such run."""
    store = RunStore(stores)
    definition = store.definition(results, run_id)
    if definition is None:
        return None
    # the new parts follow the old ones: nothing written before is rewritten
    return RunWriter(definition, store, ledger, part=store.member_parts(results, run_id))


def run_summary(
    run_id: str, results: str, ledger: RunLedger | None, store: RunStore
) -> RunSummary | None:
    """The run now: from the fleet's live counts, else its last summary.json in storage
    (``source: "storage"``), else None (no such run)."""
    counts = ledger.counts(run_id) if ledger is not None else None
    if counts is not None:
        return summarize(
            run_id,
            counts,
            store.definition(counts.folder or results, run_id),
            now_s=time.time(),
            summary_uri=summary_uri(counts.folder or results, run_id),
        )
    stored = store.summary(results, run_id)
    if stored is not None:
        return stored.model_copy(update={"source": "storage"})
    definition = store.definition(results, run_id)
    if definition is None:
        return None
    return RunSummary(
        run_id=run_id,
        name=definition.name,
        state="unknown",
        sealed=False,
        members=0,
        counts={},
        failed_by_code={},
        spent_usd=0.0,
        max_usd=definition.max_usd,
        rate_per_min=0.0,
        eta_s=None,
        created_at=definition.created_at,
        updated_at=utc_iso(time.time()),
        source="storage",
    )


def fleet_ledger(redis_url: str, *, ttl_s: int) -> RunLedger | None:
    """The fleet's run ledger (GVW_REDIS_URL), or None when that Redis does not answer
    (a run then has its records in storage, and no live counts)."""
    import redis

    from worker.fleet.connection import fleet_client
    from worker.runs.ledger import RedisRunLedger

    client = fleet_client(redis_url, socket_connect_timeout=3, socket_timeout=10)
    try:
        client.ping()
    except (redis.RedisError, FleetUnavailable):
        return None
    return RedisRunLedger(client, ttl_s=ttl_s)


@dataclass(frozen=True)
class RetryPlan:
    """What `gvw runs retry` sends again: failed members (by code) and members with no
    record at all, each under its own id."""

    failed: list[Member]
    missing: list[Member]


def plan_retry(
    store: RunStore,
    stores: ObjectStore,
    results: str,
    run_id: str,
    *,
    codes: Sequence[str] = (),
    committed: Mapping[str, str],
    error_code: Any,
) -> RetryPlan:
    """`committed`: job id -> "succeeded" | "failed" from one listing of the results;
    `error_code(job_id)`: a failed job's code, read from its record."""
    failed: list[Member] = []
    missing: list[Member] = []
    seen: set[str] = set()
    for member in store.members(results, run_id):
        if member.job_id in seen:
            continue  # a rerun's part may list a member again
        seen.add(member.job_id)
        state = committed.get(member.job_id)
        if state is None:
            missing.append(member)
        elif state == "failed" and (not codes or error_code(member.job_id) in codes):
            failed.append(member)
    return RetryPlan(failed, missing)


def recount(
    store: RunStore,
    ledger: RunLedger,
    definition: RunDefinition,
    *,
    committed: Mapping[str, str],
    record_of: Any,
) -> int:
    """The run's counts made again from storage (a fleet Redis that lost them): its
    members, each job's record from one listing (`committed`: job id -> "succeeded" |
    "failed"), and each record read (`record_of(job_id)`: the code of a failure, the cost
    of a success; a request a job: a repair, not a routine). Returns the members."""
    from worker.runs.ledger import failed_state

    results, run_id = definition.results, definition.run_id
    states: dict[str, str] = {}
    spent_usd = 0.0
    for member in store.members(results, run_id):
        state = committed.get(member.job_id)
        if state is None:
            states.setdefault(member.job_id, "q")
            continue
        code, cost = record_of(member.job_id)
        states[member.job_id] = failed_state(code or "unknown") if state == "failed" else "s"
        spent_usd += cost or 0.0
    last = store.summary(results, run_id)
    sealed = last.sealed if last is not None else False
    ledger.rebuild(run_id, states, folder=results, sealed=sealed, spent_usd=spent_usd)
    return len(states)
