"""`gvw export RUN | PREFIX`: a run's (or a results folder's) records as a Parquet dataset."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Iterator

from worker.cli.common import EXIT_FAILED, EXIT_OK, fail

EXPORTS_FOLDER = "_exports"


def cmd_export(args: argparse.Namespace) -> int:
    from worker.contract.layout import ERROR_NAME, RESULT_NAME
    from worker.exports.writer import export_records
    from worker.producers.client import VisionClient
    from worker.runs.store import RunStore
    from worker.settings import get_settings
    from worker.storage import StoreRouter, join_uri

    settings = get_settings()
    stores = StoreRouter(
        connect_timeout_s=settings.gvw_s3_connect_timeout_s,
        read_timeout_s=settings.gvw_s3_read_timeout_s,
    )
    client = VisionClient(settings=settings, stores=stores)
    target = args.target
    if "://" in target:
        results, name, members = target.rstrip("/"), "all", None
    else:
        results = args.output or settings.gvw_results_uri
        store = RunStore(stores)
        if store.definition(results, target) is None:
            fail(f"no run {target} under {results} (--output names another results folder)")
            return EXIT_FAILED
        name = target
        members = {m.job_id for m in store.members(results, target)}
    committed = client.committed(output=results)

    def record_uris() -> Iterator[str]:
        for job_id in sorted(committed):
            if members is not None and job_id not in members:
                continue
            record = RESULT_NAME if committed[job_id] == "succeeded" else ERROR_NAME
            yield join_uri(results, job_id, record)

    folder = args.to or join_uri(results, EXPORTS_FOLDER, name)
    summary = export_records(stores, record_uris(), folder)
    line = {
        "dataset": folder,
        "added": summary.added,
        "already_there": summary.already,
        "parts_written": summary.parts_written,
    }
    print(
        json.dumps(line)
        if args.json
        else (
            f"{folder}: added {summary.added} records in {summary.parts_written} parts, "
            f"{summary.already} were there already"
        )
    )
    sys.stdout.flush()
    return EXIT_OK
