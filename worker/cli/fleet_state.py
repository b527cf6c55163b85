"""`gvw files | batches | dead-letters`: what the fleet keeps in Redis and the File API."""

from __future__ import annotations

import argparse
import json
import time
from typing import Any

from worker.cli.common import EXIT_FAILED, EXIT_OK, fail


def cmd_files(args: argparse.Namespace) -> int:
    from worker.cli.files import cached_files, purge
    from worker.runtime import build_ports
    from worker.settings import get_settings

    settings = get_settings()
    ports = build_ports(settings)
    if args.files_command == "list":
        entries = cached_files(ports.files)
        now = time.time()
        for entry in entries:
            if args.json:
                print(json.dumps(entry.__dict__))
                continue
            left_h = (entry.expires_at - now) / 3600
            print(
                f"{entry.sha256[:16]}  {entry.size_bytes:>12,} B  expires in {left_h:5.1f} h  "
                f"{entry.uri}"
            )
        if not args.json:
            counters = ports.files.counters()
            summary = ", ".join(f"{k}={v}" for k, v in sorted(counters.items())) or "none yet"
            print(f"{len(entries)} cached uploads; events: {summary}")
        return EXIT_OK
    report = purge(
        ports.gemini,
        ports.files,
        expired_only=args.expired_only,
        margin_s=settings.gvw_file_cache_margin_s,
    )
    print(f"deleted {len(report.deleted)} uploads, kept {report.kept}, failed {len(report.failed)}")
    if report.failed:
        fail(f"could not delete {len(report.failed)} uploads: {', '.join(report.failed[:5])}")
        return EXIT_FAILED
    return EXIT_OK


def cmd_batches(args: argparse.Namespace) -> int:
    from worker.runtime import build_ports
    from worker.settings import get_settings

    ports = build_ports(get_settings())
    if ports.batches is None:
        fail("batch mode needs GVW_REDIS_URL")
        return EXIT_FAILED
    now = time.time()
    if args.batches_command == "list":
        records = list(ports.batches.all_batches())
        for listed in records:
            row = {
                "batch_id": listed.batch_id,
                "name": listed.name,
                "model": listed.model,
                "state": listed.state,
                "gemini_state": listed.gemini_state,
                "jobs": len(listed.job_ids),
                "source": listed.source,
                "age_s": round(now - listed.created_at, 1),
            }
            if args.json:
                print(json.dumps(row))
            else:
                print(
                    f"{listed.batch_id}  {listed.state:<10} {listed.gemini_state or '-':<20} "
                    f"{len(listed.job_ids):>6} jobs  {listed.model:<24} "
                    f"{(now - listed.created_at) / 60:7.1f} min  {listed.name or '(not submitted)'}"
                )
        if not args.json:
            by_model = {m: ports.batches.pending_count(m) for m in ports.batches.pending_models()}
            summary = ", ".join(f"{m}: {n}" for m, n in by_model.items() if n) or "none"
            print(f"{len(records)} batches; jobs waiting for a batch: {summary}")
        return EXIT_OK
    one = ports.batches.batch(args.batch_id)
    if one is None:
        fail(f"no batch {args.batch_id!r} (gvw batches list)")
        return EXIT_FAILED
    record = one
    if args.batches_command == "cancel":
        if not record.name:
            fail("the batch is not submitted yet: nothing to cancel at Gemini")
            return EXIT_FAILED
        ports.gemini.cancel_batch(record.name)
        print(f"cancelled {record.name}; its jobs go back when the follower sees it")
        return EXIT_OK
    remote = ports.gemini.get_batch(record.name) if record.name else None
    waiting = sum(1 for job_id in record.job_ids if ports.batches.is_waiting(job_id))
    print(f"batch {record.batch_id} ({record.display_name}), model {record.model}")
    print(f"  state: {record.state}; at Gemini: {remote.state if remote else 'not submitted'}")
    print(f"  name: {record.name or '-'}, source: {record.source or '-'}")
    print(
        f"  jobs: {len(record.job_ids)}, {len(record.job_ids) - waiting} answered or sent "
        f"back, {waiting} waiting"
    )
    print(f"  created {(now - record.created_at) / 60:.1f} min ago")
    return EXIT_OK


def cmd_dead_letters(args: argparse.Namespace) -> int:
    from worker.contract.layout import error_uri
    from worker.contract.records import is_summary
    from worker.producers.producer import send_job
    from worker.runtime import build_ports
    from worker.settings import get_settings

    settings = get_settings()
    ports = build_ports(settings)
    if args.dead_command == "list":
        rows = _dead_letter_rows(ports, args.limit)
        for row in rows:
            if args.json:
                print(json.dumps(row))
            else:
                note = "  (refused: its id belongs to another job)" if row["refused"] else ""
                unwritten = (
                    "  (error.json not written)"
                    if not row["recorded"] and not row["refused"]
                    else ""
                )
                print(
                    f"{row['when']}  {row['job_id']}  {row['code']}  "
                    f"attempts={row['attempts']}  {str(row['message'])[:120]}{note}{unwritten}"
                )
        if not args.json:
            refused = sum(1 for row in rows if row["refused"])
            print(
                f"{len(rows) - refused} dead letters"
                + (f", {refused} refused jobs (job id in use by another job)" if refused else "")
            )
        return EXIT_OK
    failures = 0
    for job_id in args.job_ids:
        found = ports.dead_letters.get(job_id)
        if found is None and ports.refusals.of_job(job_id):
            fail(
                f"{job_id}: the refused job reused the id of another job; send it again "
                "under a new job id (replay would be refused the same way)"
            )
            failures += 1
            continue
        if found is None or found.job is None:
            fail(f"{job_id}: no dead letter with a stored job to replay")
            failures += 1
            continue
        if is_summary(found.job):
            # a job over 16 KB is kept as a summary (worker.contract.records): not enough to rerun it
            fail(f"{job_id}: the dead letter keeps only a summary of this large job; resubmit it")
            failures += 1
            continue
        output = found.job.get("output") if isinstance(found.job.get("output"), str) else None
        ports.stores.delete(error_uri(job_id, output, settings))
        ports.deliveries.forget(job_id)
        ports.dead_letters.remove(job_id)
        send_job({**found.job, "job_id": job_id})
        print(f"{job_id}: re-enqueued")
    return EXIT_FAILED if failures else EXIT_OK


def _dead_letter_rows(ports: Any, limit: int) -> list[dict[str, Any]]:
    """Dead letters and refused jobs (an id reused by another job), newest first."""
    from worker.contract.records import ErrorRecord

    rows: list[tuple[float, dict[str, Any]]] = []
    for letter in ports.dead_letters.dead_letters(limit=limit):
        rows.append(
            (
                letter.when,
                {
                    "job_id": letter.job_id,
                    "code": letter.code,
                    "message": letter.message,
                    "attempts": letter.attempts,
                    "recorded": letter.recorded,
                    "refused": False,
                },
            )
        )
    for refusal in ports.refusals.latest(limit=limit):
        record = ErrorRecord.model_validate_json(refusal.record)
        rows.append(
            (
                refusal.when,
                {
                    "job_id": refusal.job_id,
                    "code": record.error.code,
                    "message": record.error.message,
                    "attempts": record.attempts,
                    "recorded": False,
                    "refused": True,
                    "fingerprint": refusal.fingerprint,
                },
            )
        )
    rows.sort(key=lambda pair: -pair[0])
    return [
        {**row, "when": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(when))}
        for when, row in rows[:limit]
    ]
