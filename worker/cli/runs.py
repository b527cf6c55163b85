"""`gvw runs list | show | retry | resume | seal`: runs as one thing to watch and retry (docs/runs.md)."""

from __future__ import annotations

import argparse
import json
import sys
import time
from typing import Any, TextIO

from tasks.errors import FleetUnavailable
from worker.cli.common import EXIT_FAILED, EXIT_OK, fail

# `--watch` looks again this often by default; each look is three Redis reads
WATCH_INTERVAL_S = 2.0


def cmd_runs(args: argparse.Namespace) -> int:
    from worker.producers.runs import fleet_ledger
    from worker.runs.store import RunStore
    from worker.settings import get_settings
    from worker.storage import StoreRouter

    settings = get_settings()
    results = args.output or settings.gvw_results_uri
    stores = StoreRouter(
        connect_timeout_s=settings.gvw_s3_connect_timeout_s,
        read_timeout_s=settings.gvw_s3_read_timeout_s,
    )
    store = RunStore(stores)
    ledger = fleet_ledger(settings.gvw_redis_url, ttl_s=settings.gvw_run_ttl_s)
    if ledger is None:
        print(
            "gvw: GVW_REDIS_URL unreachable: runs as their last summary.json says",
            file=sys.stderr,
        )
    if args.runs_command == "list":
        return _list(store, ledger, results, as_json=args.json)
    if args.runs_command == "show":
        return _show(store, ledger, results, args)
    if args.runs_command == "resume":
        return _resume(settings, store, ledger, results, args)
    if args.runs_command == "seal":
        return _seal(store, ledger, results, args)
    return _retry(settings, stores, store, ledger, results, args)


def _seal(store: Any, ledger: Any, results: str, args: Any) -> int:
    from worker.producers.runs import seal_run

    if ledger is None:
        fail("the fleet's Redis (GVW_REDIS_URL) does not answer: a run is sealed there")
        return EXIT_FAILED
    if ledger.counts(args.run_id) is None:
        fail(f"the fleet knows no run {args.run_id}")
        return EXIT_FAILED
    summary = seal_run(ledger, store, args.run_id, results)
    state = summary.state if summary is not None else "unknown"
    print(f"run {args.run_id}: sealed, {state}")
    return EXIT_OK


def _resume(settings: Any, store: Any, ledger: Any, results: str, args: Any) -> int:
    from worker.producers.producer import send_jobs
    from worker.producers.runs import resume_run

    definition = store.definition(results, args.run_id)
    if definition is None:
        fail(f"no run {args.run_id} under {results} (--output names another results folder)")
        return EXIT_FAILED
    if ledger is None:
        fail("the fleet's Redis (GVW_REDIS_URL) does not answer: held jobs are kept there")
        return EXIT_FAILED
    keep = args.max_usd is None and not args.no_cap
    jobs = resume_run(store, ledger, definition, max_usd=args.max_usd, keep_cap=keep)
    send_jobs(jobs, broker_url=settings.celery_broker_url)
    cap = (
        "no cap"
        if args.no_cap
        else f"cap ${args.max_usd:g}"
        if args.max_usd is not None
        else "cap unchanged"
    )
    print(f"run {args.run_id}: {cap}; sent again {len(jobs)} held jobs")
    return EXIT_OK


def _list(store: Any, ledger: Any, results: str, *, as_json: bool) -> int:
    from worker.producers.runs import run_summary

    summaries = [run_summary(run_id, results, ledger, store) for run_id in store.run_ids(results)]
    shown = sorted(
        (s for s in summaries if s is not None), key=lambda s: s.created_at or "", reverse=True
    )
    for summary in shown:
        if as_json:
            print(summary.model_dump_json())
        else:
            counts = summary.counts
            print(
                f"{summary.run_id}  {summary.state:<8}  {summary.created_at or '?'}  "
                f"{counts.get('succeeded', 0) + counts.get('failed', 0)}/{summary.members} "
                f"ended, {counts.get('failed', 0)} failed, ${summary.spent_usd:.4f}"
                + (f"  ({summary.name})" if summary.name else "")
            )
    if not as_json:
        print(f"{len(shown)} runs under {results}")
    return EXIT_OK


def _show(store: Any, ledger: Any, results: str, args: argparse.Namespace) -> int:
    from worker.producers.runs import run_summary

    if args.recount:
        counted = _recount(store, ledger, results, args.run_id)
        if counted is None:
            return EXIT_FAILED
        print(f"run {args.run_id}: counted again from storage, {counted} jobs", file=sys.stderr)
    out = sys.stdout
    drawn = 0
    while True:
        try:
            summary = run_summary(args.run_id, results, ledger, store)
        except FleetUnavailable as err:
            if not args.watch:
                # the run's last summary.json, as any machine with the results reads it
                summary = run_summary(args.run_id, results, None, store)
            else:
                # a watch outlives a Redis restart: it says so and looks again
                print(f"gvw: {err.message}; looking again", file=sys.stderr, flush=True)
                time.sleep(args.interval)
                continue
        if summary is None:
            fail(f"no run {args.run_id} under {results} (--output names another results folder)")
            return EXIT_FAILED
        if args.json:
            print(summary.model_dump_json(indent=None if args.watch else 2), flush=True)
        else:
            drawn = _draw(out, describe(summary), drawn, in_place=args.watch and out.isatty())
        if not args.watch or summary.state != "running" or summary.source != "fleet":
            return EXIT_OK
        time.sleep(args.interval)


def _recount(store: Any, ledger: Any, results: str, run_id: str) -> int | None:
    from worker.contract.records import ErrorRecord, read_record
    from worker.producers.client import VisionClient
    from worker.producers.runs import recount
    from worker.settings import get_settings

    definition = store.definition(results, run_id)
    if ledger is None:
        fail("the fleet's Redis (GVW_REDIS_URL) does not answer: nowhere to count")
        return None
    if definition is None or definition.source.kind != "prefix":
        fail(
            f"run {run_id} has no members in storage to count (only gvw enqueue-prefix keeps them)"
        )
        return None
    client = VisionClient(settings=get_settings(), stores=store.stores)
    output = definition.template.get("output")

    def record_of(job_id: str) -> tuple[str | None, float | None]:
        found = client.result(job_id, output=output)
        if found is None:
            return None, None
        record = read_record(json.dumps(found).encode())
        if isinstance(record, ErrorRecord):
            return record.error.code, None
        return None, record.usage.cost_usd

    return recount(
        store,
        ledger,
        definition,
        committed=client.committed(output=output),
        record_of=record_of,
    )


def _draw(out: TextIO, lines: list[str], drawn: int, *, in_place: bool) -> int:
    """Lines on a terminal, over the ones drawn before (ANSI: up `drawn` lines, clear)."""
    if in_place and drawn:
        out.write(f"\x1b[{drawn}F\x1b[J")
    out.write("\n".join(lines) + "\n")
    out.flush()
    return len(lines)


def describe(summary: Any) -> list[str]:
    counts = summary.counts
    codes = ", ".join(f"{c}={n}" for c, n in summary.failed_by_code.items())
    live = ", ".join(
        f"{name} {counts.get(name, 0)}"
        for name in ("queued", "running", "waiting", "batched", "held")
        if counts.get(name, 0)
    )
    lines = [
        f"run {summary.run_id}"
        + (f" ({summary.name})" if summary.name else "")
        + f": {summary.state}"
        + ("" if summary.sealed else ", still being listed")
        + (
            " (from its last summary.json: the fleet's Redis has no live counts)"
            if summary.source == "storage"
            else ""
        ),
        f"  {summary.members} jobs: succeeded {counts.get('succeeded', 0)}, "
        f"failed {counts.get('failed', 0)}"
        + (f" ({codes})" if codes else "")
        + (f"; {live}" if live else ""),
        f"  spent ${summary.spent_usd:.4f}"
        + (f" of at most ${summary.max_usd:g}" if summary.max_usd is not None else ""),
    ]
    if summary.state == "running":
        from worker.producers.progress import clock

        eta = f", about {clock(summary.eta_s)} left" if summary.eta_s is not None else ""
        lines.append(f"  {summary.rate_per_min:.1f} jobs/min over the last minutes{eta}")
    elif summary.finished_at:
        lines.append(f"  finished {summary.finished_at}")
    if summary.summary_uri:
        lines.append(f"  {summary.summary_uri}")
    return lines


def _retry(
    settings: Any, stores: Any, store: Any, ledger: Any, results: str, args: argparse.Namespace
) -> int:
    from worker.contract.layout import error_uri
    from worker.producers.client import VisionClient
    from worker.producers.runs import plan_retry
    from worker.runtime import build_ports

    definition = store.definition(results, args.run_id)
    if definition is None:
        fail(f"no run {args.run_id} under {results} (--output names another results folder)")
        return EXIT_FAILED
    if definition.source.kind != "prefix":
        fail(f"run {args.run_id} was not made by gvw enqueue-prefix: its jobs are the producer's")
        return EXIT_FAILED
    client = VisionClient(settings=settings, stores=stores)
    output = definition.template.get("output")
    plan = plan_retry(
        store,
        stores,
        results,
        args.run_id,
        codes=args.codes or (),
        committed=client.committed(output=output),
        error_code=lambda job_id: _code_of(client, job_id, output),
    )
    ports = build_ports(settings)
    jobs: list[dict[str, Any]] = []
    for member in plan.failed:
        # as `gvw dead-letters replay`: the job's error record goes, the job comes back
        ports.stores.delete(error_uri(member.job_id, output, settings))
        ports.deliveries.forget(member.job_id)
        ports.dead_letters.remove(member.job_id)
    if ledger is not None:
        ledger.reopen(args.run_id, [m.job_id for m in plan.failed])
    for member in [*plan.failed, *(plan.missing if not args.codes else [])]:
        jobs.append(
            {
                **definition.template,
                "images": member.images,
                "job_id": member.job_id,
                "run": args.run_id,
            }
        )
    client.submit_many(jobs)
    print(
        json.dumps(
            {
                "run": args.run_id,
                "failed_sent_again": len(plan.failed),
                "missing_sent_again": 0 if args.codes else len(plan.missing),
            }
        )
        if args.json
        else f"run {args.run_id}: sent again {len(plan.failed)} failed jobs"
        + ("" if args.codes else f" and {len(plan.missing)} jobs with no record")
    )
    return EXIT_OK


def _code_of(client: Any, job_id: str, output: Any) -> str | None:
    status = client.finished(job_id, output=output)
    return status.error_code if status else None
