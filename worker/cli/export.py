"""`gvw export` and `gvw report`: a run's (or a results folder's) records as a Parquet
dataset, or as one HTML page to look at."""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from worker.cli.common import EXIT_FAILED, EXIT_OK, fail

EXPORTS_FOLDER = "_exports"


@dataclass(frozen=True)
class Selection:
    """The records a target names: a run's members, or every job of a results folder."""

    results: str  # the results folder
    name: str  # the run's id, or "all"
    record_uris: list[str]  # each job's result.json or error.json, by job id


def _selection(args: argparse.Namespace, stores: Any) -> Selection | None:
    from worker.contract.layout import ERROR_NAME, RESULT_NAME
    from worker.producers.client import VisionClient
    from worker.runs.store import RunStore
    from worker.settings import get_settings
    from worker.storage import join_uri

    settings = get_settings()
    client = VisionClient(settings=settings, stores=stores)
    target = args.target
    if "://" in target:
        results, name, members = target.rstrip("/"), "all", None
    else:
        results = args.output or settings.gvw_results_uri
        store = RunStore(stores)
        if store.definition(results, target) is None:
            fail(f"no run {target} under {results} (--output names another results folder)")
            return None
        name = target
        members = {m.job_id for m in store.members(results, target)}
    committed = client.committed(output=results)
    uris = [
        join_uri(results, job_id, RESULT_NAME if committed[job_id] == "succeeded" else ERROR_NAME)
        for job_id in sorted(committed)
        if members is None or job_id in members
    ]
    return Selection(results=results, name=name, record_uris=uris)


def _stores() -> Any:
    from worker.settings import get_settings
    from worker.storage import StoreRouter

    settings = get_settings()
    return StoreRouter(
        connect_timeout_s=settings.gvw_s3_connect_timeout_s,
        read_timeout_s=settings.gvw_s3_read_timeout_s,
    )


def cmd_export(args: argparse.Namespace) -> int:
    from worker.exports.writer import export_records
    from worker.storage import join_uri

    stores = _stores()
    selected = _selection(args, stores)
    if selected is None:
        return EXIT_FAILED
    folder = args.to or join_uri(selected.results, EXPORTS_FOLDER, selected.name)
    summary = export_records(stores, selected.record_uris, folder)
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


def cmd_report(args: argparse.Namespace) -> int:
    """`gvw report RUN | PREFIX`: the records as one HTML page (docs/exports.md), written to
    ./gvw-report/NAME.html or to --to (a path, or a URI in storage)."""
    from worker.exports.gallery import ImageMode, gallery_of
    from worker.exports.report import HTML_TYPE, render_report

    stores = _stores()
    selected = _selection(args, stores)
    if selected is None:
        return EXIT_FAILED
    mode = ImageMode(args.images)
    gallery = gallery_of(
        stores,
        selected.record_uris,
        mode=mode,
        link_lifetime_s=args.link_lifetime_s,
        limit=args.limit,
    )
    page = render_report(
        gallery,
        name=selected.results if "://" in args.target else selected.name,
        source=selected.results,
        mode=mode,
        link_lifetime_s=args.link_lifetime_s,
    ).encode()
    # a run's id is a safe file name; a folder is named by its last segment, made safe
    stem = selected.name if "://" not in args.target else _safe_stem(selected.results)
    to = args.to or str(Path("gvw-report") / f"{stem}.html")
    if "://" in to:
        stores.put_bytes(to, page, content_type=HTML_TYPE)
    else:
        Path(to).parent.mkdir(parents=True, exist_ok=True)
        Path(to).write_bytes(page)
    summary = gallery.summary
    line = {"report": to, "jobs": summary.jobs, "shown": summary.shown, "bytes": len(page)}
    print(
        json.dumps(line)
        if args.json
        else f"{to}: {summary.jobs} jobs, {summary.shown} in the gallery, {len(page):,} bytes"
    )
    sys.stdout.flush()
    return EXIT_OK


def _safe_stem(uri: str) -> str:
    last = uri.rstrip("/").rsplit("/", 1)[-1]
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in last).strip(".") or "report"
